"""The artifact stores on real backends: a folder, and a real S3-protocol server (moto's, in a child process).

Every test that takes `backend` runs once per backend, through `open_artifact_store` as the
processes will; the few that check one backend's configuration errors say so in their names.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from minio import Minio

from common.config import ArtifactSettings
from common.errors import ArtifactError, ArtifactNotFoundError, ConfigError
from storage.artifacts import ArtifactStore, LocalArtifactStore, key_for, open_artifact_store
from tests.fakes.s3 import ACCESS_KEY_ENV, CREDENTIALS, SECRET_KEY_ENV
from tests.helpers import eventually

MIB = 1024 * 1024


@dataclass
class Backend:
    """An open store plus a way to look at the backend behind its back."""

    name: str
    settings: ArtifactSettings
    store: ArtifactStore

    def raw_client(self) -> Minio:
        return Minio(self.settings.endpoint, access_key="test-access", secret_key="test-secret", secure=False)

    def stored_names(self) -> list[str]:
        """Every object (file, or key in the bucket) that exists, however the store would list it."""
        if self.name == "local":
            root = Path(self.settings.local_dir) / "sha256"
            files = (p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".meta"))
            return sorted(str(p.relative_to(root.parent)) for p in files)
        objects = self.raw_client().list_objects(self.settings.bucket, recursive=True)
        return sorted(o.object_name or "" for o in objects)

    def temporary_files(self) -> list[str]:
        """Temporary files the store left in its folder (S3 has none: a PUT is one request)."""
        if self.name != "local":
            return []
        root = Path(self.settings.local_dir)
        return [str(p) for p in root.rglob("*") if p.name.endswith(".part")]

    def corrupt(self, key: str, data: bytes) -> None:
        """Replace the bytes under `key` without the store knowing."""
        if self.name == "local":
            (Path(self.settings.local_dir) / key).write_bytes(data)
        else:
            self.raw_client().put_object(self.settings.bucket, key, _BytesReader(data), len(data))


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def read(self, size: int = -1) -> bytes:
        size = len(self._data) if size < 0 else size
        chunk, self._data = bytes(self._data[:size]), self._data[size:]
        return chunk


def _folder_or_bucket_exists(settings: ArtifactSettings) -> bool:
    if settings.backend == "local":
        return Path(settings.local_dir).is_dir()
    raw = Minio(settings.endpoint, access_key="test-access", secret_key="test-secret", secure=False)
    return raw.bucket_exists(settings.bucket)


def _settings(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> ArtifactSettings:
    if name == "local":
        return ArtifactSettings(backend="local", local_dir=str(tmp_path / "artifacts"))
    endpoint: str = request.getfixturevalue("s3_endpoint")
    return ArtifactSettings(backend="minio", endpoint=endpoint, bucket=f"claw-test-{uuid.uuid4().hex[:16]}")


@pytest.fixture(params=["local", "minio"])
def backend_settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ArtifactSettings:
    """The settings of one backend, with the credentials in the environment as a deployment has them."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return _settings(request.param, tmp_path, request)


@pytest.fixture
async def backend(backend_settings: ArtifactSettings) -> AsyncIterator[Backend]:
    """An open store of each backend (local folder, S3 server), closed after the test."""
    store = await open_artifact_store(backend_settings)
    try:
        yield Backend(backend_settings.backend, backend_settings, store)
    finally:
        await store.close()


def _write_file(path: Path, size: int) -> str:
    """A file of `size` random bytes written in 1 MiB chunks; returns its sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        while size > 0:
            chunk = os.urandom(min(MIB, size))
            digest.update(chunk)
            f.write(chunk)
            size -= len(chunk)
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


# --- round trips -----------------------------------------------------------------------------------


async def test_bytes_round_trip_under_a_key_derived_from_their_sha256(backend: Backend) -> None:
    data = b"the result of a task\n" * 100
    sha256 = hashlib.sha256(data).hexdigest()
    stored = await backend.store.put_bytes(data, "text/plain")
    assert (stored.sha256, stored.size, stored.content_type) == (sha256, len(data), "text/plain")
    assert stored.key == f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}" == key_for(sha256)
    assert stored.backend == backend.name and stored.created
    assert await backend.store.get_bytes(stored.key) == data


async def test_file_of_several_mib_round_trips_through_download(backend: Backend, tmp_path: Path) -> None:
    """6 MiB and a bit: more than one chunk locally, a multipart upload on S3 (parts of 5 MiB)."""
    source = tmp_path / "big.bin"
    sha256 = _write_file(source, 6 * MIB + 123)
    stored = await backend.store.put_file(source, "application/x-parquet")
    assert (stored.sha256, stored.size, stored.created) == (sha256, 6 * MIB + 123, True)
    dest = tmp_path / "out" / "copy.bin"
    await backend.store.download(stored.key, dest)
    assert _file_sha256(dest) == sha256
    assert os.listdir(dest.parent) == ["copy.bin"]  # the download's temporary file is gone
    info = await backend.store.stat(stored.key)
    assert info is not None and (info.size, info.content_type) == (6 * MIB + 123, "application/x-parquet")


# --- content addressing ----------------------------------------------------------------------------


async def test_same_content_from_several_puts_is_stored_once(backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(4096)
    first = await backend.store.put_bytes(data, "application/octet-stream")
    second = await backend.store.put_bytes(data, "image/png")
    (tmp_path / "same.bin").write_bytes(data)
    from_file = await backend.store.put_file(tmp_path / "same.bin")
    assert first.created and not second.created and not from_file.created
    assert first.key == second.key == from_file.key
    assert second.content_type == "image/png"  # as declared by that put; the object keeps the first
    info = await backend.store.stat(first.key)
    assert info is not None and info.content_type == "application/octet-stream"
    assert backend.stored_names() == [first.key]
    assert [key async for key in backend.store.iter_keys()] == [first.key]


async def test_concurrent_puts_of_the_same_content_leave_one_whole_object(backend: Backend) -> None:
    """Racing puts of one content in one process (threads), as racing workers would on one store.

    moto itself sometimes answers one of racing PUTs of a key with a 500 (it closes the buffer of
    the object being replaced); the client retries 5xx, as it must against any S3 server.
    """
    data = os.urandom(256 * 1024)
    results = await asyncio.gather(*(backend.store.put_bytes(data) for _ in range(8)))
    assert len({r.key for r in results}) == 1
    assert any(r.created for r in results)
    if backend.name == "local":
        assert sum(r.created for r in results) == 1  # hard links: exactly one put creates it
    assert backend.stored_names() == [results[0].key]
    assert await backend.store.get_bytes(results[0].key) == data


async def test_different_content_gets_different_keys(backend: Backend) -> None:
    one = await backend.store.put_bytes(b"one")
    two = await backend.store.put_bytes(b"two")
    assert one.key != two.key and one.created and two.created
    assert backend.stored_names() == sorted([one.key, two.key])
    listed = [info async for info in backend.store.iter_objects()]
    assert sorted((i.key, i.size) for i in listed) == sorted([(one.key, 3), (two.key, 3)])
    assert await backend.store.get_bytes(one.key) == b"one"
    assert await backend.store.get_bytes(two.key) == b"two"


async def test_a_put_of_stored_bytes_refreshes_their_modified_time(backend: Backend) -> None:
    """The TTL cleanup spares objects put recently, including puts that found the bytes stored."""
    stored = await backend.store.put_bytes(b"shared by many tasks")
    before = await backend.store.stat(stored.key)
    assert before is not None

    async def refreshed() -> bool:
        again = await backend.store.put_bytes(b"shared by many tasks")
        info = await backend.store.stat(stored.key)
        return not again.created and info is not None and info.modified > before.modified

    # S3 keeps Last-Modified in whole seconds: a later put shows within a second or two.
    await eventually(refreshed, timeout_s=10, interval_s=0.2, what="a newer modified time")
    assert backend.stored_names() == [stored.key]


# --- exists, stat, delete, errors ------------------------------------------------------------------


async def test_exists_stat_and_delete_which_is_idempotent(backend: Backend) -> None:
    stored = await backend.store.put_bytes(b"short-lived", "text/plain")
    assert await backend.store.exists(stored.key)
    info = await backend.store.stat(stored.key)
    assert info is not None
    assert (info.key, info.sha256, info.size, info.content_type) == (stored.key, stored.sha256, 11, "text/plain")
    assert info.modified > 0
    await backend.store.delete(stored.key)
    assert not await backend.store.exists(stored.key)
    assert await backend.store.stat(stored.key) is None
    await backend.store.delete(stored.key)
    assert backend.stored_names() == []
    again = await backend.store.put_bytes(b"short-lived", "text/plain")
    assert again.created  # deleted content can be stored again


async def test_missing_key_raises_not_found_and_download_leaves_no_file(backend: Backend, tmp_path: Path) -> None:
    key = key_for(hashlib.sha256(b"never stored").hexdigest())
    with pytest.raises(ArtifactNotFoundError, match="no artifact sha256/"):
        await backend.store.get_bytes(key)
    with pytest.raises(ArtifactNotFoundError):
        await backend.store.download(key, tmp_path / "dl" / "missing.bin")
    assert not (tmp_path / "dl" / "missing.bin").exists()
    assert not await backend.store.exists(key)


async def test_malformed_keys_are_refused_before_touching_the_backend(backend: Backend) -> None:
    for bad in ("../../etc/passwd", "sha256/ab/cd/" + "ab" * 32, "sha256/" + "0" * 64, "SHA256/00/00/" + "0" * 64):
        with pytest.raises(ArtifactError, match="not an artifact key"):
            await backend.store.get_bytes(bad)
        with pytest.raises(ArtifactError, match="not an artifact key"):
            await backend.store.delete(bad)


async def test_corrupt_object_is_refused_by_reads_and_never_reaches_dest(backend: Backend, tmp_path: Path) -> None:
    stored = await backend.store.put_bytes(b"the real content")
    backend.corrupt(stored.key, b"something else")
    with pytest.raises(ArtifactError, match="is corrupt"):
        await backend.store.get_bytes(stored.key)
    dest = tmp_path / "dl" / "file.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"previous")
    with pytest.raises(ArtifactError, match="is corrupt"):
        await backend.store.download(stored.key, dest)
    assert dest.read_bytes() == b"previous"  # untouched, and no temporary file beside it
    assert os.listdir(dest.parent) == ["file.bin"]


async def test_put_file_of_a_missing_path_is_an_artifact_error(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="missing.bin"):
        await backend.store.put_file(tmp_path / "missing.bin")


async def test_writes_leave_no_temporary_files(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    _write_file(source, 2 * MIB)
    stored = await backend.store.put_file(source)
    await backend.store.put_file(source)
    await backend.store.put_bytes(b"small")
    await backend.store.download(stored.key, tmp_path / "dl" / "copy.bin")
    assert os.listdir(tmp_path / "dl") == ["copy.bin"]
    assert backend.temporary_files() == []
    assert len(backend.stored_names()) == 2


# --- opening ---------------------------------------------------------------------------------------


async def test_open_creates_the_missing_folder_or_bucket_even_when_racing(
    backend_settings: ArtifactSettings,
) -> None:
    """Two processes starting at once may both find the bucket missing; both must open."""
    assert not _folder_or_bucket_exists(backend_settings)
    stores = await asyncio.gather(*(open_artifact_store(backend_settings) for _ in range(3)))
    try:
        assert _folder_or_bucket_exists(backend_settings)
        stored = await stores[0].put_bytes(b"visible to all")
        assert await stores[2].get_bytes(stored.key) == b"visible to all"
    finally:
        for store in stores:
            await store.close()


async def test_minio_without_credentials_names_the_variables_to_set(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ACCESS_KEY_ENV, raising=False)
    monkeypatch.delenv(SECRET_KEY_ENV, raising=False)
    settings = ArtifactSettings(backend="minio", endpoint=s3_endpoint)
    with pytest.raises(ConfigError, match=f"set the environment variables {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}"):
        await open_artifact_store(settings)
    monkeypatch.setenv("MY_KEY", "AKIA-never-shown")
    monkeypatch.delenv("MY_SECRET", raising=False)
    custom = ArtifactSettings(
        backend="minio", endpoint=s3_endpoint, access_key_env="MY_KEY", secret_key_env="MY_SECRET"
    )
    with pytest.raises(ConfigError, match="set the environment variable MY_SECRET ") as err:
        await open_artifact_store(custom)
    assert "AKIA-never-shown" not in str(err.value)


async def test_minio_unreachable_endpoint_names_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = ArtifactSettings(backend="minio", endpoint=f"127.0.0.1:{port}")
    with pytest.raises(ArtifactError, match=f"cannot reach the artifact store at http://127.0.0.1:{port}"):
        await open_artifact_store(settings)


async def test_minio_endpoint_with_a_scheme_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="artifacts.endpoint 'http://127.0.0.1:9000' is not valid"):
        await open_artifact_store(ArtifactSettings(backend="minio", endpoint="http://127.0.0.1:9000"))


async def test_local_stale_uploads_are_removed_and_fresh_ones_kept(tmp_path: Path) -> None:
    """What a killed writer leaves in tmp/ goes; a write in progress (a fresh file) stays."""
    store = LocalArtifactStore(tmp_path / "artifacts")
    tmp = tmp_path / "artifacts" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "old.part").write_bytes(b"half")
    os.utime(tmp / "old.part", (0, 0))
    (tmp / "fresh.part").write_bytes(b"half")
    assert await store.remove_stale_uploads(older_than_s=3600) == 1
    assert [p.name for p in tmp.iterdir()] == ["fresh.part"]
