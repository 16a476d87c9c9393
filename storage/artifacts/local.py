"""`LocalArtifactStore`: artifacts in a folder, the default (shared by every process of `claw up`).

Layout under the root:

    sha256/ab/cd/<hex>        the object, named by the sha256 of its content
    sha256/ab/cd/<hex>.meta   its content type (JSON), written by the put that created the object
    tmp/<uuid>.part           writes in progress

A put writes a temporary file in `tmp/` (the same filesystem as the objects), fsyncs it, and then
hard-links it to its final name. A link fails when the name exists, so of concurrent puts of the same
content, in this process or another, exactly one creates the object and the others get
`created=False`. A crash leaves at most a temporary file, never a half object under a final key.
Where the filesystem has no hard links, `os.replace` publishes the file instead: still atomic, but
two racing puts may then both report `created=True`.

All file I/O runs in worker threads (`asyncio.to_thread`): nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from common.errors import ArtifactError, ArtifactNotFoundError
from storage.artifacts.base import (
    DEFAULT_CONTENT_TYPE,
    KEY_PREFIX,
    ArtifactStore,
    Backend,
    ObjectInfo,
    StoredObject,
    check_digest,
    copy_hashing,
    download_atomically,
    hash_file,
    is_key,
    iterate_in_thread,
    key_for,
    sha256_of_key,
)

TMP_DIR = "tmp"
TMP_SUFFIX = ".part"
META_SUFFIX = ".meta"
# link(2) answers these where the filesystem cannot make hard links (FAT, some network shares).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP})


class _Meta(msgspec.Struct, frozen=True):
    """The sidecar of an object: what the backend keeps besides the bytes."""

    content_type: str


_meta_encoder = msgspec.json.Encoder()
_meta_decoder = msgspec.json.Decoder(_Meta)


class LocalArtifactStore(ArtifactStore):
    """A content-addressed store in the folder `root` (created on the first write)."""

    backend: Backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp_dir = self.root / TMP_DIR

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    async def put_bytes(self, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> StoredObject:
        """Store `data` (once: a second put of the same bytes writes nothing)."""
        return await asyncio.to_thread(self._put_bytes, data, content_type)

    async def put_file(self, path: Path, content_type: str = DEFAULT_CONTENT_TYPE) -> StoredObject:
        """Store the file at `path`: hashed in one pass, copied (and hashed again) in a second."""
        return await asyncio.to_thread(self._put_file, Path(path), content_type)

    async def get_bytes(self, key: str) -> bytes:
        """The content under `key`, checked against its sha256."""
        return await asyncio.to_thread(self._get_bytes, key)

    async def download(self, key: str, dest: Path) -> None:
        """Copy the object to `dest` through a checked temporary file and a rename."""
        await asyncio.to_thread(self._download, key, Path(dest))

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        return await asyncio.to_thread(self._object_path(sha256_of_key(key)).is_file)

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size, modification time and content type of the object, or None."""
        return await asyncio.to_thread(self._stat, key)

    async def delete(self, key: str) -> None:
        """Remove the object and its sidecar; nothing happens when there is none."""
        await asyncio.to_thread(self._delete, key)

    def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        """Every object under `sha256/`, walked in a worker thread."""
        return iterate_in_thread(self._walk())

    async def remove_stale_uploads(self, older_than_s: float = 24 * 3600.0) -> int:
        """Remove temporary files older than `older_than_s` (left by killed writers)."""
        return await asyncio.to_thread(self._remove_stale_uploads, older_than_s)

    async def close(self) -> None:
        """Nothing to release."""

    # --- blocking parts, run in worker threads ---------------------------------------------------

    def _put_bytes(self, data: bytes, content_type: str) -> StoredObject:
        sha256 = hashlib.sha256(data).hexdigest()

        def fill(out: BinaryIO) -> str:
            out.write(data)
            return sha256

        created = self._store(sha256, content_type, fill, source="the bytes")
        return self._stored(sha256, len(data), content_type, created)

    def _put_file(self, path: Path, content_type: str) -> StoredObject:
        with self._os_errors(f"read {path}"):
            sha256, size = hash_file(path)

        def fill(out: BinaryIO) -> str:
            with open(path, "rb") as src:
                return copy_hashing(src, out)

        created = self._store(sha256, content_type, fill, source=str(path))
        return self._stored(sha256, size, content_type, created)

    def _store(self, sha256: str, content_type: str, fill: Callable[[BinaryIO], str], *, source: str) -> bool:
        """Publish the content `fill` writes under its key; False when it was already there."""
        final = self._object_path(sha256)
        with self._os_errors(f"store {key_for(sha256)}"):
            if _touch(final):
                return False
            self._tmp_dir.mkdir(parents=True, exist_ok=True)
            tmp = self._tmp_path()
            try:
                with open(tmp, "xb") as out:
                    written = fill(out)
                    out.flush()
                    os.fsync(out.fileno())
                if written != sha256:
                    raise ArtifactError(f"{source} changed while it was being stored; nothing was stored")
                final.parent.mkdir(parents=True, exist_ok=True)
                if not _publish(tmp, final):
                    _touch(final)
                    return False
                _fsync_dir(final.parent)
                self._write_meta(final, content_type)
                return True
            finally:
                tmp.unlink(missing_ok=True)

    def _write_meta(self, final: Path, content_type: str) -> None:
        """The content type beside the object; a hint, so a lost sidecar only loses the type."""
        tmp = self._tmp_path()
        try:
            tmp.write_bytes(_meta_encoder.encode(_Meta(content_type)))
            os.replace(tmp, _meta_path(final))
        finally:
            tmp.unlink(missing_ok=True)

    def _get_bytes(self, key: str) -> bytes:
        sha256 = sha256_of_key(key)
        with self._os_errors(f"read {key}"):
            try:
                data = self._object_path(sha256).read_bytes()
            except FileNotFoundError:
                raise self._not_found(key) from None
        check_digest(key, sha256, hashlib.sha256(data).hexdigest())
        return data

    def _download(self, key: str, dest: Path) -> None:
        path = self._object_path(sha256_of_key(key))
        with self._os_errors(f"download {key} to {dest}"):
            try:
                src = open(path, "rb")  # noqa: SIM115 - closed by the with below
            except FileNotFoundError:
                raise self._not_found(key) from None
            with src:
                download_atomically(dest, key, lambda out: copy_hashing(src, out))

    def _stat(self, key: str) -> ObjectInfo | None:
        sha256 = sha256_of_key(key)
        path = self._object_path(sha256)
        with self._os_errors(f"stat {key}"):
            try:
                st = path.stat()
            except FileNotFoundError:
                return None
            content_type = _read_content_type(path)
        return ObjectInfo(key=key, sha256=sha256, size=st.st_size, modified=st.st_mtime, content_type=content_type)

    def _delete(self, key: str) -> None:
        path = self._object_path(sha256_of_key(key))
        with self._os_errors(f"delete {key}"):
            # The sidecar first: an interrupted delete leaves an object without its type, never the
            # reverse (a sidecar nobody lists).
            _meta_path(path).unlink(missing_ok=True)
            path.unlink(missing_ok=True)

    def _walk(self) -> Iterator[ObjectInfo]:
        with self._os_errors("list objects"):
            for first in _subdirs(self.root / KEY_PREFIX.rstrip("/")):
                for second in _subdirs(first):
                    yield from _objects_in(second, f"{KEY_PREFIX}{first.name}/{second.name}/")

    def _remove_stale_uploads(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        with self._os_errors("remove stale uploads"):
            for entry in _entries(self._tmp_dir):
                if entry.name.endswith(TMP_SUFFIX) and _mtime(entry) < cutoff:
                    Path(entry.path).unlink(missing_ok=True)
                    removed += 1
        return removed

    # --- helpers ---------------------------------------------------------------------------------

    def _object_path(self, sha256: str) -> Path:
        return self.root / key_for(sha256)

    def _tmp_path(self) -> Path:
        return self._tmp_dir / f"{uuid.uuid4().hex}{TMP_SUFFIX}"

    def _stored(self, sha256: str, size: int, content_type: str, created: bool) -> StoredObject:
        return StoredObject(
            sha256=sha256, size=size, content_type=content_type, backend="local", key=key_for(sha256), created=created
        )

    def _not_found(self, key: str) -> ArtifactNotFoundError:
        return ArtifactNotFoundError(f"no artifact {key} in the local artifact store {self.root}")

    @contextlib.contextmanager
    def _os_errors(self, action: str) -> Iterator[None]:
        """Turn an OSError into an ArtifactError that says what was being done, and where."""
        try:
            yield
        except OSError as exc:
            raise ArtifactError(f"local artifact store {self.root}: cannot {action}: {exc}") from exc


def _publish(tmp: Path, final: Path) -> bool:
    """Give `tmp` the name `final` unless taken (False then); the old name is removed by the caller."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        os.replace(tmp, final)
    return True


def _touch(path: Path) -> bool:
    """Refresh the modification time (a dedupe hit counts as a put for the cleanup); False if absent."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def _fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (a rename or link is not, until its folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + META_SUFFIX)


def _read_content_type(path: Path) -> str:
    try:
        return _meta_decoder.decode(_meta_path(path).read_bytes()).content_type
    except (FileNotFoundError, msgspec.DecodeError):
        return DEFAULT_CONTENT_TYPE


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _subdirs(folder: Path) -> Iterator[Path]:
    for entry in _entries(folder):
        if len(entry.name) == 2 and entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)


def _objects_in(folder: Path, prefix: str) -> Iterator[ObjectInfo]:
    for entry in _entries(folder):
        key = prefix + entry.name
        if not is_key(key) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # deleted while we walked
            continue
        yield ObjectInfo(key=key, sha256=entry.name, size=st.st_size, modified=st.st_mtime)


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return float("inf")
