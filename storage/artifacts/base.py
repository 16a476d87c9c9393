"""The content-addressed artifact store: the interface both backends implement, keys and hashing.

An artifact's bytes are stored once, under a key derived only from their sha256:
`sha256/<hex[0:2]>/<hex[2:4]>/<hex>`. Two tasks producing the same bytes share one object; a second
put of bytes already stored writes nothing and returns `created=False`. Metadata about an artifact
(which task made it, its name, its declared content type, its expiry) is not the store's business:
it lives in SQLite rows that reference the object by sha256.

Reads verify what they return against the key's sha256, so a corrupt or truncated object is reported
as an `ArtifactError`, never returned as if it were the artifact.

How the TTL cleanup job must use the store
-----------------------------------------
Objects are shared by content: an expired row says nothing about the object, because another row may
reference the same sha256. And an object exists *before* any row references it: a worker stores the
bytes first and reports the reference later, with its task's result, which may be hours later. So:

1. Expire rows, not objects. Delete the expired metadata rows in one transaction.
2. List the store (`iter_objects()`), and for each object whose sha256 no remaining row references,
   delete it only if its `modified` time is older than a grace period longer than the longest a
   task may hold an unreported artifact (at least the largest task timeout, plus the time to report;
   hours, not seconds). A younger unreferenced object is most likely an artifact whose row is on its
   way.
3. Before deleting, `stat()` the object again and re-check `modified`: a put of bytes that are already
   stored refreshes `modified` (the dedupe hit "touches" the object), so an old object just claimed by
   a new task survives this cleanup round.
4. `delete()` is idempotent: two cleanup runs, or a cleanup racing a user's delete, are harmless.
5. For the local backend, also call `remove_stale_uploads()` now and then: a process killed while
   writing leaves a temporary file (never a half object under a final key).

What remains is a narrow race: a put that finds the object (and touches it) between the cleanup's
second stat and its delete gets `created=False` for an object that is then gone. The window is one
round trip. The coordinator, which both records references and runs the cleanup, can close it by
doing both under one lock and checking `exists()` when it records a reference.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Literal, TypeVar

import msgspec

from common.errors import ArtifactError

Backend = Literal["local", "minio"]
T = TypeVar("T")

KEY_PREFIX = "sha256/"
# Reads and writes move files in pieces of this size: a big file is never held whole in memory.
CHUNK_BYTES = 1024 * 1024
# Listings cross from a worker thread to the event loop in batches of this many entries.
LIST_BATCH = 1000
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_KEY = re.compile(r"^sha256/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class StoredObject(msgspec.Struct, frozen=True, kw_only=True):
    """What a put stored (or found already stored)."""

    sha256: str
    size: int
    # As given to this put. The backend keeps the type of the first put of these bytes; the type an
    # artifact was declared with belongs in its metadata row.
    content_type: str
    backend: Backend
    key: str
    # False when the same bytes were already stored and nothing was written.
    created: bool


class ObjectInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An object as the backend holds it."""

    key: str
    sha256: str
    size: int
    # Unix time of the last put of these bytes (a put that found them already stored counts).
    modified: float
    # From `stat()`; None in listings, which do not carry it.
    content_type: str | None = None


def key_for(sha256: str) -> str:
    """The key of the object whose content has this sha256 (lowercase hex)."""
    if not _HEX.match(sha256):
        raise ArtifactError(f"not a sha256 hex digest: {sha256!r}")
    return f"{KEY_PREFIX}{sha256[0:2]}/{sha256[2:4]}/{sha256}"


def sha256_of_key(key: str) -> str:
    """The sha256 a key names; refuses anything that is not a well-formed key (no path tricks)."""
    match = _KEY.match(key)
    if not match or match.group(3)[:2] != match.group(1) or match.group(3)[2:4] != match.group(2):
        raise ArtifactError(f"not an artifact key: {key!r} (expected sha256/ab/cd/abcd...)")
    return match.group(3)


def is_key(key: str) -> bool:
    """Whether `key` is a well-formed artifact key (listings skip anything else)."""
    try:
        sha256_of_key(key)
    except ArtifactError:
        return False
    return True


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size of a file, read in chunks. Blocking: call it in a thread."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_digest(key: str, expected: str, actual: str) -> None:
    """Refuse content whose hash is not the one its key promises."""
    if actual != expected:
        raise ArtifactError(f"artifact {key} is corrupt: its content hashes to {actual}")


def write_chunks(chunks: Iterable[bytes], out: BinaryIO) -> str:
    """Write `chunks` to `out`; returns the sha256 (hex) of what was written."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        out.write(chunk)
    return digest.hexdigest()


def copy_hashing(src: BinaryIO, out: BinaryIO) -> str:
    """Copy `src` to `out` in chunks; returns the sha256 (hex) of what was copied."""
    return write_chunks(iter(lambda: src.read(CHUNK_BYTES), b""), out)


def download_atomically(dest: Path, key: str, fill: Callable[[BinaryIO], str]) -> None:
    """Let `fill` write the object to a temporary file beside `dest`, check it, then rename it.

    `fill` returns the sha256 of what it wrote; content that does not match `key` never reaches
    `dest`. The temporary file is in the same folder, so the rename is atomic, and it is removed on
    any failure. Blocking: call it in a thread.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    try:
        with open(tmp, "xb") as out:
            digest = fill(out)
            out.flush()
            os.fsync(out.fileno())
        check_digest(key, sha256_of_key(key), digest)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


async def iterate_in_thread(items: Iterator[T], batch: int = LIST_BATCH) -> AsyncIterator[T]:
    """Drain a blocking iterator from worker threads, `batch` items per hop to the event loop."""

    def take() -> list[T]:
        return list(islice(items, batch))

    while chunk := await asyncio.to_thread(take):
        for item in chunk:
            yield item


class ArtifactStore(abc.ABC):
    """A content-addressed object store. Every method is safe to call from many tasks at once."""

    backend: Backend

    @abc.abstractmethod
    async def put_bytes(self, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> StoredObject:
        """Store `data` (once: a second put of the same bytes writes nothing)."""

    @abc.abstractmethod
    async def put_file(self, path: Path, content_type: str = DEFAULT_CONTENT_TYPE) -> StoredObject:
        """Store the content of the file at `path`, streamed: it is never loaded whole into memory."""

    @abc.abstractmethod
    async def get_bytes(self, key: str) -> bytes:
        """The content under `key`; raises `ArtifactNotFoundError` when there is none."""

    @abc.abstractmethod
    async def download(self, key: str, dest: Path) -> None:
        """Write the content under `key` to `dest`, atomically: `dest` is whole or untouched."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo | None:
        """The object under `key`, or None."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object under `key`; nothing happens when there is none."""

    @abc.abstractmethod
    def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        """Every object in the store (content type not included), in no particular order."""

    async def iter_keys(self) -> AsyncIterator[str]:
        """Every key in the store, in no particular order."""
        async for info in self.iter_objects():
            yield info.key

    async def remove_stale_uploads(self, older_than_s: float = 24 * 3600.0) -> int:
        """Remove what writers killed mid-upload left behind; returns how many. Default: nothing.

        An S3 server keeps incomplete multipart uploads instead: give the bucket a lifecycle rule
        (`AbortIncompleteMultipartUpload`) for those.
        """
        del older_than_s
        return 0

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; idempotent."""

    async def __aenter__(self) -> ArtifactStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
