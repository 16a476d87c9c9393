"""Content-addressed artifact stores: a local folder (the default) or any S3 API (MinIO).

`open_artifact_store(settings)` gives the configured one; `storage.artifacts.base` describes the
interface, the key layout and how the TTL cleanup must use it.
"""

from storage.artifacts.base import ArtifactStore, ObjectInfo, StoredObject, key_for, sha256_of_key
from storage.artifacts.factory import open_artifact_store
from storage.artifacts.local import LocalArtifactStore

__all__ = [
    "ArtifactStore",
    "LocalArtifactStore",
    "MinioArtifactStore",
    "ObjectInfo",
    "StoredObject",
    "key_for",
    "open_artifact_store",
    "sha256_of_key",
]


def __getattr__(name: str) -> object:
    # MinioArtifactStore on first use only: importing minio is heavy (see factory.py).
    if name == "MinioArtifactStore":
        from storage.artifacts.minio_store import MinioArtifactStore

        return MinioArtifactStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
