"""Artifacts through the cluster, on both backends: put by handlers, deduplicated by content, large
results and inputs by reference, and the TTL job that removes expired rows and objects."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.config import ArtifactSettings, ClawConfig
from common.states import TaskState
from communication.nats_server import EmbeddedNatsServer
from storage.artifacts import open_artifact_store
from tests.conftest import make_config
from tests.fakes.s3 import CREDENTIALS
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online
from worker.context import TaskContext
from worker.skills import Skill, SkillRegistry


@pytest.fixture(params=["local", "minio"])
def artifact_settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """The `artifacts` config of one backend (a folder, or a real S3 server), credentials in the env."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    if request.param == "local":
        yield {"backend": "local", "local_dir": str(tmp_path / "store")}
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        yield {"backend": "minio", "endpoint": endpoint, "bucket": f"claw-{uuid.uuid4().hex[:12]}"}


def cluster_config(server: EmbeddedNatsServer, prefix: str, tmp_path: Path, artifacts: dict[str, Any]) -> ClawConfig:
    return make_config(server, prefix, tmp_path, artifacts=artifacts)


async def object_count(settings: ArtifactSettings) -> int:
    store = await open_artifact_store(settings)
    try:
        return len([key async for key in store.iter_keys()])
    finally:
        await store.close()


def report_skills() -> SkillRegistry:
    async def report(ctx: TaskContext, input: dict[str, Any]) -> dict[str, str]:
        ref = await ctx.put_artifact("report.md", f"# Report\n{input['body']}\n", "text/markdown")
        return {"sha256": ref.sha256}

    return SkillRegistry([Skill("report.write", report)])


async def test_same_content_from_two_tasks_is_stored_once(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, artifact_settings: dict[str, Any]
) -> None:
    config = cluster_config(nats_server, prefix, tmp_path, artifact_settings)
    async with (
        running_coordinator(config),
        running_worker(config, skills=report_skills()),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        first, second = await client.submit_many([spec("report.write", {"body": "same"}) for _ in range(2)])
        other = await client.submit(spec("report.write", {"body": "different"}))
        ids = [first.task_id, second.task_id, other.task_id]
        assert set((await client.wait(ids, timeout_s=20)).values()) == {TaskState.SUCCEEDED}
        rows = [await eventually(lambda t=t: client.artifacts(t), what="artifact row") for t in ids]
    assert [r[0].name for r in rows] == ["report.md"] * 3
    assert rows[0][0].sha256 == rows[1][0].sha256 != rows[2][0].sha256
    assert await object_count(config.artifacts) == 2  # three artifacts, two contents


async def test_large_input_and_result_travel_as_references(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, artifact_settings: dict[str, Any]
) -> None:
    from cli.artifacts import fetch_artifact, offload_large_inputs

    config = cluster_config(nats_server, prefix, tmp_path, artifact_settings)
    big = {"rows": ["x" * 100] * 30_000}  # about 3 MiB of JSON
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        [task_spec] = await offload_large_inputs([spec("echo", big)], client, config.artifacts)
        assert task_spec.input_ref is not None and bytes(task_spec.input) == b"{}"
        submitted = await client.submit(task_spec)
        assert await client.wait([submitted.task_id], timeout_s=30) == {submitted.task_id: TaskState.SUCCEEDED}
        task = await client.get_task(submitted.task_id)
        names = sorted(a.name for a in task.artifacts)
        assert names == ["input.json", "result.json"]
        out = tmp_path / "result.json"
        await fetch_artifact(client, config.artifacts, submitted.task_id, "result.json", out)
        assert msgspec.json.decode(out.read_bytes()) == big
        before = await object_count(config.artifacts)
        [again] = await offload_large_inputs([spec("echo", big)], client, config.artifacts)
        assert again.input_ref == task_spec.input_ref
        assert await object_count(config.artifacts) == before  # the same bytes are not stored again


async def test_ttl_cleanup_removes_expired_rows_and_their_objects(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, artifact_settings: dict[str, Any]
) -> None:
    settings = artifact_settings | {"default_ttl_s": 0.5, "cleanup_grace_s": 0, "cleanup_interval_s": 0.2}
    config = cluster_config(nats_server, prefix, tmp_path, settings)
    async with (
        running_coordinator(config),
        running_worker(config, skills=report_skills()),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("report.write", {"body": "short-lived"}))
        await client.wait([submitted.task_id], timeout_s=20)
        assert await eventually(lambda: client.artifacts(submitted.task_id), what="artifact recorded")

        async def gone() -> bool:
            return not await client.artifacts(submitted.task_id) and await object_count(config.artifacts) == 0

        await eventually(gone, timeout_s=20, what="expired artifact removed")


async def test_orphan_sweep_deletes_objects_no_row_references_and_keeps_the_rest(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, artifact_settings: dict[str, Any]
) -> None:
    # The orphan ages past the grace period; the task's own object is recorded well within it.
    settings = artifact_settings | {"cleanup_grace_s": 3.0, "orphan_sweep_interval_s": 0.2}
    config = cluster_config(nats_server, prefix, tmp_path, settings)
    store = await open_artifact_store(config.artifacts)
    try:
        # What a worker killed between its put and its report leaves behind.
        orphan = await store.put_bytes(b"never reported", "text/plain")
        async with (
            running_coordinator(config),
            running_worker(config, skills=report_skills()),
            connected_client(config) as client,
        ):
            await wait_nodes_online(client, 1)
            submitted = await client.submit(spec("report.write", {"body": "kept"}))
            await client.wait([submitted.task_id], timeout_s=20)
            [kept] = await eventually(lambda: client.artifacts(submitted.task_id), what="artifact recorded")

            async def orphan_gone() -> bool:
                return not await store.exists(orphan.key)

            await eventually(orphan_gone, timeout_s=20, what="orphan removed")
            assert await store.exists(kept.key)
            assert await client.artifacts(submitted.task_id) == [kept]
    finally:
        await store.close()
