"""Per-call permits in a real coordinator and worker: a handler calling an API several times takes a
permit per call (`async with ctx.limit(key)`), the key's limit holds across tasks, the tokens it
reports reconcile the key's TPM and add up in `claw usage`."""

from __future__ import annotations

import asyncio
from typing import Any

from common import verbs
from common.api import LimitsListRequest, LimitsSetRequest, UsageRequest
from common.config import ClawConfig
from common.flow import Limit
from common.states import TaskState
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online
from worker import SkillRegistry, TaskContext
from worker.skills import Skill

CALLS = 3


class Agent:
    """A skill making CALLS calls, each under a permit on `api:x`, counting calls at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0

    async def run(self, ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        for _ in range(CALLS):
            async with ctx.limit("api:x", tokens=10):
                self.inside += 1
                self.most = max(self.most, self.inside)
                await asyncio.sleep(0.05)
                self.inside -= 1
                ctx.report_usage(input_tokens=7, output_tokens=3, model="m-x")
        return {"calls": CALLS}


async def test_each_call_takes_a_permit_and_the_limit_holds_across_tasks(config: ClawConfig) -> None:
    agent = Agent()
    async with (
        running_coordinator(config),
        running_worker(config, skills=SkillRegistry([Skill("agent", agent.run)])),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        await client.call(verbs.LIMITS_SET, LimitsSetRequest(limit=Limit(key="api:x", concurrency=2)))
        results = await client.submit_many([spec("agent", {}) for _ in range(4)])

        async def done() -> bool:
            tasks = [await client.get_task(r.task_id, history=False) for r in results]
            assert all(t.state != TaskState.FAILED for t in tasks)
            return all(t.state == TaskState.SUCCEEDED for t in tasks)

        await eventually(done, what="agent tasks done")
        assert agent.most == 2
        reply = await client.call(verbs.LIMITS_LIST, LimitsListRequest())
        [view] = [v for v in reply.limits if v.key == "api:x"]
        assert view.in_flight == 0 and view.requests_last_minute == 4 * CALLS
        assert view.tokens_last_minute == 4 * CALLS * 10  # each call's estimate replaced by 7 + 3

        async def usage_counted() -> bool:
            rows = (await client.call(verbs.USAGE, UsageRequest(by=["skill", "model"]))).rows
            row = next((r for r in rows if r.model == "m-x"), None)
            return row is not None and (row.input_tokens, row.output_tokens) == (4 * CALLS * 7, 4 * CALLS * 3)

        await eventually(usage_counted, what="usage of the calls")
