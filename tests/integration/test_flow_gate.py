"""Flow control's gate in a real coordinator and worker: a task whose limit key has no room is not
published (it holds no worker slot), its timeline says what it waits for, and it runs when room
appears; limits are set, listed and deleted through the API and kept in SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common import verbs
from common.api import LimitsDeleteRequest, LimitsListRequest, LimitsSetRequest, LimitView
from common.config import ClawConfig
from common.errors import InvalidInputError
from common.flow import Limit
from common.states import TaskState
from communication.api_client import ClawClient
from tests.conftest import make_config
from tests.helpers import (
    connected_client,
    eventually,
    running_coordinator,
    running_worker,
    spec,
    succeeded,
    wait_nodes_online,
)
from worker import SkillRegistry, TaskContext, builtin_registry
from worker.skills import Skill


class Gated:
    """A skill `hold` whose calls block until released, counting how many run at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = 0
        self.most = 0

    async def hold(self, ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return {"ok": True}


@pytest.fixture
def flow_config(nats_server: Any, prefix: str, tmp_path: Path) -> ClawConfig:
    return make_config(
        nats_server,
        prefix,
        tmp_path,
        worker={"concurrency": 8, "heartbeat_interval_s": 0.2, "idle_poll_interval_s": 0.2},
        flow={"skill_keys": {"hold": ["api:{name}"]}},
    )


async def _view(client: ClawClient, key: str) -> LimitView | None:
    reply = await client.call(verbs.LIMITS_LIST, LimitsListRequest())
    return next((v for v in reply.limits if v.key == key), None)


async def test_tasks_beyond_the_concurrency_limit_wait_unpublished_and_run_when_room_appears(
    flow_config: ClawConfig,
) -> None:
    gated = Gated()
    skills = builtin_registry(flow_config)
    skills.register(Skill("hold", gated.hold))
    async with (
        running_coordinator(flow_config),
        running_worker(flow_config, skills=SkillRegistry(skills.all())),
        connected_client(flow_config) as client,
    ):
        await wait_nodes_online(client, 1)
        await client.call(verbs.LIMITS_SET, LimitsSetRequest(limit=Limit(key="api:a", concurrency=2)))
        held = await client.submit_many([spec("hold", {"name": "a"}) for _ in range(5)])
        ids = [r.task_id for r in held]
        await eventually(lambda: gated.running == 2, what="two tasks running")

        view = await eventually(lambda: _view(client, "api:a"))
        assert view.in_flight == 2 and view.waiting == 3
        waiting = [t for t in [await client.get_task(i) for i in ids] if t.state == TaskState.PENDING]
        assert len(waiting) == 3
        for task in waiting:
            notes = [e for e in task.events if e.kind == "waiting for limit"]
            assert notes and b"api:a" in bytes(notes[0].data)

        # The worker has 8 slots: with 2 held by running tasks, echo runs at once (no slot is held
        # by the waiting ones).
        echo = await client.submit_many([spec("echo", {"n": i}) for i in range(6)])
        for result in echo:
            await eventually(lambda r=result: succeeded(client, r.task_id), what="echo done")  # type: ignore[misc]
        assert gated.running == 2

        gated.release.set()
        for task_id in ids:
            await eventually(lambda t=task_id: succeeded(client, t), what="held task done")  # type: ignore[misc]
        assert gated.most == 2
        finished = await client.get_task(waiting[0].task_id)
        assert any(e.kind == "limit granted" for e in finished.events)
        view = await eventually(lambda: _view(client, "api:a"))
        assert view.in_flight == 0 and view.waiting == 0


async def test_limits_are_set_listed_deleted_and_kept_in_sqlite(flow_config: ClawConfig) -> None:
    async with running_coordinator(flow_config), connected_client(flow_config) as client:
        limit = Limit(key="llm:glm-4.7", requests=40, window_s=60.0, concurrency=5, tokens_per_minute=100000)
        reply = await client.call(verbs.LIMITS_SET, LimitsSetRequest(limit=limit))
        assert [v.limit for v in reply.limits] == [limit]
        with pytest.raises(InvalidInputError, match="at least one"):
            await client.call(verbs.LIMITS_SET, LimitsSetRequest(limit=Limit(key="x")))
        with pytest.raises(InvalidInputError, match="no limit is set"):
            await client.call(verbs.LIMITS_DELETE, LimitsDeleteRequest(key="nope"))
    db = sqlite3.connect(flow_config.coordinator.db_path)
    try:
        stored = [msgspec.json.decode(row[0], type=Limit) for row in db.execute("SELECT spec FROM flow_limits")]
    finally:
        db.close()
    assert stored == [limit]
    # A restarted coordinator has it still; then it is deleted.
    async with running_coordinator(flow_config), connected_client(flow_config) as client:
        assert (await _view(client, "llm:glm-4.7")) is not None
        reply = await client.call(verbs.LIMITS_DELETE, LimitsDeleteRequest(key="llm:glm-4.7"))
        assert reply.limits == []


async def test_a_task_with_a_bad_limit_key_is_refused_with_one_clear_line(flow_config: ClawConfig) -> None:
    async with running_coordinator(flow_config), connected_client(flow_config) as client:
        with pytest.raises(InvalidInputError, match="limit key"):
            await client.submit_many([spec("echo", {}, limit_keys=["bad key with spaces"])])


async def test_a_task_whose_limit_key_cannot_be_made_from_its_input_fails_with_the_reason(
    flow_config: ClawConfig,
) -> None:
    """Run anyway, it would escape its skill's limit: it ends failed, naming the missing field."""
    gated = Gated()
    gated.release.set()
    async with (
        running_coordinator(flow_config),
        running_worker(flow_config, skills=SkillRegistry([Skill("hold", gated.hold)])),
        connected_client(flow_config) as client,
    ):
        await wait_nodes_online(client, 1)
        [result] = await client.submit_many([spec("hold", {"other": 1})])

        async def failed() -> bool:
            return (await client.get_task(result.task_id, history=False)).state == TaskState.FAILED

        await eventually(failed, what="the task failed")
        task = await client.get_task(result.task_id)
        assert "no scalar field 'name'" in (task.error_message or "") and gated.most == 0
