"""The CLI's side of artifacts: large inputs go to the store before submit; `claw artifacts get`.

The CLI reads and writes the artifact store directly. When the user configured an `artifacts`
section (file or CLAW_ARTIFACTS_* variables) it is used as it is; otherwise the CLI asks the
coordinator where its store is, so `claw up`'s local folder works from any directory of the same
machine. MinIO / S3 credentials always come from this machine's environment.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from common.config import ArtifactSettings
from common.errors import ArtifactNotFoundError, TaskNotFoundError
from common.models import EMPTY_OBJECT, INPUT_ARTIFACT, ArtifactRef, ArtifactView, TaskSpec
from communication.api_client import ClawClient
from storage.artifacts import ArtifactStore, open_artifact_store


async def cluster_store_settings(client: ClawClient, own: ArtifactSettings) -> ArtifactSettings:
    """`own` when the user configured artifacts at all; else the coordinator's store settings."""
    if own != ArtifactSettings():
        return own
    return await client.artifact_store()


async def offload_large_inputs(specs: list[TaskSpec], client: ClawClient, own: ArtifactSettings) -> list[TaskSpec]:
    """Specs whose input is over `inline_max_bytes` get it put in the store and travel as references."""
    if all(len(s.input) <= own.inline_max_bytes for s in specs):
        return specs
    settings = await cluster_store_settings(client, own)
    store = await open_artifact_store(settings)
    try:
        return [await _offload(spec, store, settings.inline_max_bytes) for spec in specs]
    finally:
        await store.close()


async def _offload(spec: TaskSpec, store: ArtifactStore, limit: int) -> TaskSpec:
    if len(spec.input) <= limit:
        return spec
    stored = await store.put_bytes(bytes(spec.input), "application/json")
    ref = ArtifactRef(
        name=INPUT_ARTIFACT,
        sha256=stored.sha256,
        size=stored.size,
        content_type="application/json",
        backend=stored.backend,
        key=stored.key,
    )
    return msgspec.structs.replace(spec, input=EMPTY_OBJECT, input_ref=ref)


async def fetch_artifact(
    client: ClawClient, own: ArtifactSettings, task_id: str, name: str, dest: Path
) -> ArtifactView:
    """Download a task's artifact `name` (its newest attempt's) to `dest`."""
    found = [a for a in await client.artifacts(task_id) if a.name == name]
    if not found:
        raise TaskNotFoundError(f"task {task_id} has no artifact called '{name}'; `claw artifacts list {task_id}`")
    artifact = max(found, key=lambda a: a.attempt)
    settings = await cluster_store_settings(client, own)
    store = await open_artifact_store(settings)
    try:
        await store.download(artifact.key, dest)
    except ArtifactNotFoundError:
        where = settings.local_dir if settings.backend == "local" else f"{settings.endpoint}/{settings.bucket}"
        raise ArtifactNotFoundError(
            f"{name} ({artifact.key}) is not in the {settings.backend} store at {where}; point the artifacts "
            "settings (CLAW_ARTIFACTS_LOCAL_DIR, or the MinIO ones) at the cluster's store"
        ) from None
    finally:
        await store.close()
    return artifact
