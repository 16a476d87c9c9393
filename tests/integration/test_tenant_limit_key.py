"""A tenant's own limit key (issue 12, item 8: "limit keys of their own"): with a limit on
`tenant:acme`, every task of tenant acme takes that key (no task has to name it), so the limit holds
over all of acme's work, while other tenants' tasks, and acme's before any such limit, are not
touched. Real coordinator, worker, nats-server and SQLite."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from common import verbs
from common.api import LimitsListRequest, LimitsSetRequest
from common.config import ClawConfig
from common.flow import Limit
from common.states import TaskState
from tests.helpers import connected_client, running_coordinator, running_worker, spec, wait_nodes_online
from worker.context import TaskContext
from worker.skills import Skill, SkillRegistry


async def test_a_limit_on_a_tenants_key_holds_over_all_its_tasks_and_no_other_tenants(config: ClawConfig) -> None:
    inside: Counter[str] = Counter()
    most: Counter[str] = Counter()

    async def work(ctx: TaskContext, input: dict[str, Any]) -> None:
        tenant = input["tenant"]
        inside[tenant] += 1
        most[tenant] = max(most[tenant], inside[tenant])
        await asyncio.sleep(0.1)
        inside[tenant] -= 1

    skills = SkillRegistry([Skill("work", work)])
    async with (
        running_coordinator(config),
        running_worker(config, skills=skills),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        await client.call(verbs.LIMITS_SET, LimitsSetRequest(limit=Limit(key="tenant:acme", concurrency=1)))
        acme = await client.submit_many([spec("work", {"tenant": "acme"}) for _ in range(5)], tenant="acme")
        other = await client.submit_many([spec("work", {"tenant": "other"}) for _ in range(5)], tenant="other")
        final = await client.wait([r.task_id for r in acme + other], timeout_s=60)
        waited = await client.get_task(acme[-1].task_id)
        reply = await client.call(verbs.LIMITS_LIST, LimitsListRequest())
    assert Counter(final.values()) == {TaskState.SUCCEEDED: 10}
    assert most["acme"] == 1  # the tenant's limit, though no task named the key
    assert most["other"] > 1  # other tenants are not limited by it
    assert any(e.kind == "waiting for limit" and b"tenant:acme" in bytes(e.data or b"") for e in waited.events)
    [view] = [v for v in reply.limits if v.key == "tenant:acme"]
    assert view.requests_last_minute == 5
