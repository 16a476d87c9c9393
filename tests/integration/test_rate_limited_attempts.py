"""An attempt the API pushed back with a 429 is recorded `rate_limited`, not `failed` (issue 12:
"its attempt is marked as rate-limited, not failed"), in a real coordinator and worker; a server
error is still a failed attempt. `claw task show` lists them so."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from common.config import ClawConfig
from common.errors import RetryableError
from common.states import AttemptState, TaskState
from tests.helpers import ProcessPool, connected_client, running_coordinator, running_worker, spec, wait_nodes_online
from worker.context import TaskContext
from worker.skills import Skill, SkillRegistry


async def test_a_429_attempt_is_rate_limited_and_a_server_error_attempt_failed(
    config: ClawConfig, processes: ProcessPool
) -> None:
    tries: Counter[str] = Counter()

    async def call(ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        tries[ctx.task_id] += 1
        if tries[ctx.task_id] == 1:
            raise RetryableError(input["error"], retry_after_s=0.2)
        return {"ok": True}

    skills = SkillRegistry([Skill("call", call)])
    async with (
        running_coordinator(config),
        running_worker(config, skills=skills),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        limited = await client.submit(spec("call", {"error": "HTTP 429 Too Many Requests from the API"}))
        broken = await client.submit(spec("call", {"error": "HTTP 503 Service Unavailable"}))
        final = await client.wait([limited.task_id, broken.task_id], timeout_s=60)
        assert set(final.values()) == {TaskState.SUCCEEDED}
        limited_view = await client.get_task(limited.task_id)
        broken_view = await client.get_task(broken.task_id)
        shown = await asyncio.to_thread(processes.run, "task", "show", limited.task_id)
    assert [a.state for a in limited_view.attempt_log] == [AttemptState.RATE_LIMITED, AttemptState.SUCCEEDED]
    assert [a.state for a in broken_view.attempt_log] == [AttemptState.FAILED, AttemptState.SUCCEEDED]
    assert shown.returncode == 0 and "rate_limited" in shown.stdout, shown.stdout
