"""Installed skills reaching the workers: a failed load is reported in the heartbeats and tried again
with backoff, without a restart."""

from __future__ import annotations

from pathlib import Path

from common.config import ClawConfig
from common.models import SkillLoad
from common.states import TaskState
from communication.api_client import ClawClient
from tests.helpers import (
    connected_client,
    eventually,
    running_coordinator,
    running_worker,
    spec,
    wait_nodes_online,
    worker_config,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "skills"


async def load_of(client: ClawClient, node_id: str, skill: str) -> SkillLoad | None:
    """What `node_id`'s last heartbeat says about an installed skill."""
    return next((n.skill_loads.get(skill) for n in await client.nodes() if n.node_id == node_id), None)


async def test_a_failed_load_is_reported_and_retried_until_it_succeeds(config: ClawConfig, tmp_path: Path) -> None:
    cache = tmp_path / "w1-cache"
    cache.mkdir()
    blocker = cache / "text.stats"  # a file where the skill's folder must go
    blocker.write_text("in the way")
    async with (
        running_coordinator(config),
        running_worker(worker_config(config, node_id="w1", skill_cache_dir=str(cache))) as worker,
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        await client.install_skill(EXAMPLES / "text_stats")

        async def failed() -> SkillLoad | None:
            load = await load_of(client, "w1", "text.stats")
            return load if load is not None and load.state == "failed" else None

        load = await eventually(failed, what="w1 reports the failed load")
        assert load.version == "1.0.0" and "File exists" in (load.error or "")
        assert "text.stats" not in worker.skills.names()

        blocker.unlink()
        await eventually(lambda: "text.stats" in worker.skills.names(), what="w1 loads it on a later try")
        await eventually(lambda: _state(client, "loaded"), what="w1 reports it loaded")
        submitted = await client.submit(spec("text.stats", {"text": "a b a"}))
        await client.wait([submitted.task_id], timeout_s=30)
        assert (await client.get_task(submitted.task_id)).state == TaskState.SUCCEEDED


async def _state(client: ClawClient, state: str) -> bool:
    load = await load_of(client, "w1", "text.stats")
    return load is not None and load.state == state
