"""`MinioArtifactStore`: artifacts in a bucket of any S3 API (MinIO, AWS S3, ...), via the minio client.

The minio client is synchronous, so every call runs in a worker thread (`asyncio.to_thread`). Keys are
those of the local store; each object carries its sha256 as user metadata (`x-amz-meta-sha256`) and
its content type. A put asks `stat_object` first and uploads only bytes not stored yet. An S3 PUT is
atomic (a reader sees the whole object or none), so two processes uploading the same bytes at once
both write the same content; both may then report `created=True`.

A dedupe hit refreshes the object's Last-Modified, which the TTL cleanup relies on (see
`storage.artifacts.base`), by copying the object onto itself with its metadata: server-side, no
bytes travel. In a versioned bucket that copy keeps a new version each time, so do not enable
versioning on the artifact bucket. Objects over 5 GiB (the S3 limit of a single copy) are not
refreshed.

Credentials come only from the environment variables that `artifacts.access_key_env` and
`artifacts.secret_key_env` name. They are never logged, and no message or repr contains them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, cast

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import MinioException, S3Error
from minio.helpers import DictType, check_bucket_name

from common.config import ArtifactSettings
from common.errors import ArtifactError, ArtifactNotFoundError, ConfigError
from common.log import get_logger
from storage.artifacts.base import (
    DEFAULT_CONTENT_TYPE,
    KEY_PREFIX,
    ArtifactStore,
    Backend,
    ObjectInfo,
    StoredObject,
    check_digest,
    download_atomically,
    hash_file,
    is_key,
    iterate_in_thread,
    key_for,
    sha256_of_key,
    write_chunks,
)

log = get_logger("storage.artifacts.minio")

SHA256_METADATA = "x-amz-meta-sha256"
CONNECT_TIMEOUT_S = 10.0
# Waiting for one response (a part of at least 5 MiB goes up before it) may take this long.
READ_TIMEOUT_S = 120.0
# Connection errors and 5xx answers are retried this many times (the minio default is 5 with
# five-minute timeouts: a dead endpoint would hang a put for half an hour).
HTTP_RETRIES = 3
MAX_COPY_BYTES = 5 * 1024**3
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchObject"})
_BUCKET_TAKEN = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
_DENIED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"})


class MinioArtifactStore(ArtifactStore):
    """A content-addressed store in one bucket of an S3 API. Open it with `await MinioArtifactStore.open`."""

    backend: Backend = "minio"

    def __init__(self, client: Minio, http: urllib3.PoolManager, settings: ArtifactSettings) -> None:
        self._client = client
        self._http = http
        self._settings = settings
        self.bucket = settings.bucket
        self.endpoint = f"{'https' if settings.secure else 'http'}://{settings.endpoint}"

    @classmethod
    async def open(cls, settings: ArtifactSettings, *, env: Mapping[str, str] | None = None) -> MinioArtifactStore:
        """Connect, check the endpoint answers, and create the bucket if it is missing."""
        access_key, secret_key = _credentials(settings, os.environ if env is None else env)
        try:
            check_bucket_name(settings.bucket, strict=True)
        except ValueError:
            raise ConfigError(
                f"artifacts.bucket {settings.bucket!r} is not a valid S3 bucket name "
                "(3 to 63 lowercase letters, digits, dots and hyphens)"
            ) from None
        http = _http_pool()
        try:
            client = Minio(
                settings.endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=settings.secure,
                region=settings.region,
                http_client=http,
            )
        except ValueError as exc:
            http.clear()
            raise ConfigError(
                f"artifacts.endpoint {settings.endpoint!r} is not valid ({exc}): give host:port without a scheme, "
                "and set artifacts.secure for https"
            ) from None
        store = cls(client, http, settings)
        try:
            await asyncio.to_thread(store._ensure_bucket)
        except BaseException:
            await store.close()
            raise
        return store

    def __repr__(self) -> str:
        return f"MinioArtifactStore({self.endpoint!r}, bucket={self.bucket!r})"

    async def put_bytes(self, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> StoredObject:
        """Store `data` unless an object with its sha256 is there already."""
        sha256 = await asyncio.to_thread(_sha256, data)
        created = await asyncio.to_thread(self._put_bytes, sha256, data, content_type)
        return self._stored(sha256, len(data), content_type, created)

    async def put_file(self, path: Path, content_type: str = DEFAULT_CONTENT_TYPE) -> StoredObject:
        """Store the file at `path`: hashed in one pass, streamed up (and hashed again) in a second."""
        path = Path(path)
        try:
            sha256, size = await asyncio.to_thread(hash_file, path)
        except OSError as exc:
            raise ArtifactError(f"cannot read {path} to store it as an artifact: {exc}") from exc
        created = await asyncio.to_thread(self._put_file, sha256, size, path, content_type)
        return self._stored(sha256, size, content_type, created)

    async def get_bytes(self, key: str) -> bytes:
        """The content under `key`, checked against its sha256."""
        return await asyncio.to_thread(self._get_bytes, key)

    async def download(self, key: str, dest: Path) -> None:
        """Stream the object into a temporary file beside `dest`, check it, and rename it."""
        await asyncio.to_thread(self._download, key, Path(dest))

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        return await self.stat(key) is not None

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size, Last-Modified and content type of the object, or None."""
        return await asyncio.to_thread(self._stat, key)

    async def delete(self, key: str) -> None:
        """Remove the object; S3 answers a delete of a missing key with success, so this is idempotent."""
        sha256_of_key(key)
        await asyncio.to_thread(self._delete, key)

    def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        """Every object under `sha256/` in the bucket, listed page by page in a worker thread."""
        return iterate_in_thread(self._list())

    async def close(self) -> None:
        """Close the HTTP connections; idempotent."""
        self._http.clear()

    # --- blocking parts, run in worker threads ---------------------------------------------------

    def _ensure_bucket(self) -> None:
        with self._s3_errors(f"check bucket {self.bucket}"):
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket, location=self._settings.region)
            except S3Error as exc:
                # Another process may have created it since we looked: fine if it is ours to use.
                if exc.code not in _BUCKET_TAKEN or not self._client.bucket_exists(self.bucket):
                    raise
                return
        log.info("artifacts.bucket_created", bucket=self.bucket, endpoint=self.endpoint)

    def _put_bytes(self, sha256: str, data: bytes, content_type: str) -> bool:
        key = key_for(sha256)
        with self._s3_errors(f"store {key}"):
            if self._touch(key, sha256):
                return False
            self._upload(key, sha256, io.BytesIO(data), len(data), content_type)
            return True

    def _put_file(self, sha256: str, size: int, path: Path, content_type: str) -> bool:
        key = key_for(sha256)
        with self._s3_errors(f"store {key}"), open(path, "rb") as f:
            if self._touch(key, sha256):
                return False
            reader = _HashingReader(f)
            self._upload(key, sha256, cast(BinaryIO, reader), size, content_type)
            if reader.hexdigest() != sha256:
                # What went up is not what the key says: never leave it there. (A concurrent put of
                # the right bytes could lose its object here; the file changing is the caller's bug.)
                self._client.remove_object(self.bucket, key)
                raise ArtifactError(f"{path} changed while it was being stored; nothing was stored")
            return True

    def _upload(self, key: str, sha256: str, data: BinaryIO, size: int, content_type: str) -> None:
        # Known length: minio reads it in parts (a single PUT up to 5 MiB, multipart above), so at
        # most a few parts are in memory at once.
        self._client.put_object(
            self.bucket, key, data, size, content_type=content_type, metadata={SHA256_METADATA: sha256}
        )

    def _touch(self, key: str, sha256: str) -> bool:
        """Whether `key` exists; if so, refresh its Last-Modified (copy onto itself, same metadata)."""
        try:
            info = self._client.stat_object(self.bucket, key)
            if (info.size or 0) <= MAX_COPY_BYTES:
                content_type = info.content_type or DEFAULT_CONTENT_TYPE
                metadata: DictType = {"Content-Type": content_type, SHA256_METADATA: sha256}
                source = CopySource(self.bucket, key)
                self._client.copy_object(self.bucket, key, source, metadata=metadata, metadata_directive=REPLACE)
        except S3Error as exc:
            if exc.code in _NOT_FOUND:
                return False
            raise
        return True

    def _get_bytes(self, key: str) -> bytes:
        sha256 = sha256_of_key(key)
        with self._s3_errors(f"read {key}"):
            response = self._get_object(key)
            try:
                data = response.read()
            finally:
                response.close()
                response.release_conn()
        check_digest(key, sha256, _sha256(data))
        return data

    def _download(self, key: str, dest: Path) -> None:
        sha256_of_key(key)
        with self._s3_errors(f"download {key} to {dest}"):
            response = self._get_object(key)
            try:
                download_atomically(dest, key, lambda out: write_chunks(response.stream(1024 * 1024), out))
            finally:
                response.close()
                response.release_conn()

    def _get_object(self, key: str) -> urllib3.BaseHTTPResponse:
        try:
            return self._client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _NOT_FOUND:
                raise ArtifactNotFoundError(f"no artifact {key} in bucket {self.bucket} at {self.endpoint}") from None
            raise

    def _stat(self, key: str) -> ObjectInfo | None:
        sha256 = sha256_of_key(key)
        with self._s3_errors(f"stat {key}"):
            try:
                info = self._client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in _NOT_FOUND:
                    return None
                raise
        modified = info.last_modified.timestamp() if info.last_modified else 0.0
        return ObjectInfo(
            key=key, sha256=sha256, size=info.size or 0, modified=modified, content_type=info.content_type
        )

    def _delete(self, key: str) -> None:
        with self._s3_errors(f"delete {key}"):
            self._client.remove_object(self.bucket, key)

    def _list(self) -> Iterator[ObjectInfo]:
        with self._s3_errors("list objects"):
            for obj in self._client.list_objects(self.bucket, prefix=KEY_PREFIX, recursive=True):
                key = obj.object_name or ""
                if not is_key(key):
                    continue
                modified = obj.last_modified.timestamp() if obj.last_modified else 0.0
                yield ObjectInfo(key=key, sha256=sha256_of_key(key), size=obj.size or 0, modified=modified)

    # --- helpers ---------------------------------------------------------------------------------

    def _stored(self, sha256: str, size: int, content_type: str, created: bool) -> StoredObject:
        return StoredObject(
            sha256=sha256, size=size, content_type=content_type, backend="minio", key=key_for(sha256), created=created
        )

    @contextlib.contextmanager
    def _s3_errors(self, action: str) -> Iterator[None]:
        """Turn what the minio client and urllib3 raise into ArtifactErrors naming the endpoint."""
        try:
            yield
        except S3Error as exc:
            raise self._s3_error(action, exc) from exc
        except MinioException as exc:
            raise ArtifactError(f"the artifact store at {self.endpoint} failed to {action}: {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ArtifactError(
                f"cannot reach the artifact store at {self.endpoint} (artifacts.endpoint) to {action}: {_reason(exc)}"
            ) from exc
        except OSError as exc:
            raise ArtifactError(f"artifact store {self.endpoint}: cannot {action}: {exc}") from exc

    def _s3_error(self, action: str, exc: S3Error) -> ArtifactError:
        where = f"the artifact store at {self.endpoint}"
        if exc.code in _DENIED:
            return ArtifactError(
                f"{where} refused to {action} in bucket {self.bucket} ({exc.code}): check the credentials in "
                f"${self._settings.access_key_env} and ${self._settings.secret_key_env} and their rights"
            )
        if exc.code == "NoSuchBucket":
            return ArtifactError(f"{where} has no bucket {self.bucket} (removed while in use?): cannot {action}")
        return ArtifactError(f"{where} failed to {action}: {exc.code}: {exc.message}")


class _HashingReader:
    """A file wrapper that hashes what the uploader reads, to check it against the first pass."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        self._digest.update(chunk)
        return chunk

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _credentials(settings: ArtifactSettings, env: Mapping[str, str]) -> tuple[str, str]:
    """The access and secret key from the environment; a clear ConfigError naming what to set."""
    names = (settings.access_key_env, settings.secret_key_env)
    values = tuple(env.get(name, "") for name in names)
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise ConfigError(
            "artifacts.backend is minio but the S3 credentials are not set: set the environment "
            f"variable{'s' if len(missing) > 1 else ''} {' and '.join(missing)} "
            "(their names come from artifacts.access_key_env and artifacts.secret_key_env)"
        )
    return values[0], values[1]


def _http_pool() -> urllib3.PoolManager:
    """minio's own pool, with timeouts and retries that fail in seconds when the endpoint is down."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        retries=urllib3.Retry(total=HTTP_RETRIES, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else None
    return str(reason or exc)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
