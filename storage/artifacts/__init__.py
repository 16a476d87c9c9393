"""Content-addressed artifact stores: a local folder (the default) or any S3 API (MinIO).

`storage.artifacts.base` describes the interface, the key layout and how the TTL cleanup must use it.
"""

from storage.artifacts.base import ArtifactStore, ObjectInfo, StoredObject, key_for, sha256_of_key
from storage.artifacts.local import LocalArtifactStore

__all__ = [
    "ArtifactStore",
    "LocalArtifactStore",
    "ObjectInfo",
    "StoredObject",
    "key_for",
    "sha256_of_key",
]
