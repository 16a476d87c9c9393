"""`open_artifact_store`: the store the `artifacts` config section describes, checked before use."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import assert_never

from common.config import ArtifactSettings
from common.errors import ArtifactError
from storage.artifacts.base import ArtifactStore
from storage.artifacts.local import LocalArtifactStore


async def open_artifact_store(settings: ArtifactSettings, *, env: Mapping[str, str] | None = None) -> ArtifactStore:
    """Open the configured backend; misconfiguration fails here, with the key or variable to fix.

    local: the folder is created, and must be writable. minio: the credentials must be in the
    environment (`env`, default `os.environ`), the endpoint must answer, and the bucket is created
    when missing.
    """
    match settings.backend:
        case "local":
            root = Path(settings.local_dir)
            await asyncio.to_thread(_check_folder, root)
            return LocalArtifactStore(root)
        case "minio":
            # Imported here: the minio client and its crypto dependencies cost ~15 MB of RSS that a
            # process on the local backend (every worker of `claw up`) does not need.
            from storage.artifacts.minio_store import MinioArtifactStore

            return await MinioArtifactStore.open(settings, env=env)
        case _:
            assert_never(settings.backend)


def _check_folder(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create the artifact folder {root} (artifacts.local_dir): {exc}") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise ArtifactError(f"the artifact folder {root} (artifacts.local_dir) is not writable")
