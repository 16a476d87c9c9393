"""Fair share between tenants and flow control's limits gate, both on, in a real coordinator, worker,
nats-server and SQLite: the limit is never exceeded, the tenants' weights hold among the tasks that
wait for the limit, every task finishes, and a task waiting for a limit holds no worker slot (nor a
place that would keep tasks of the same skill on another key from running)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import verbs
from common.api import LimitsListRequest
from common.states import TaskState
from communication.nats_server import EmbeddedNatsServer
from tests.conftest import make_config
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, worker_config
from worker.context import TaskContext
from worker.skills import Skill, SkillRegistry

CONCURRENCY = 2
REQUESTS_PER_S = 20
FLOOD = 60  # tenant A's tasks on the limited key, queued before any worker runs
LATE = 30  # tenant B's (weight 3), submitted once A's run
FREE = 10  # tenant C's tasks of the same skill on an unlimited key


class Calls:
    """The skill `call`: one call to the API named in its input, with its starts and calls at once."""

    def __init__(self) -> None:
        self.starts: dict[str, list[tuple[float, str]]] = {"slow": [], "free": []}
        self.inside: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()

    async def call(self, ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        name = input["name"]
        self.starts[name].append((time.monotonic(), input["tenant"]))
        self.inside[name] += 1
        self.most[name] = max(self.most[name], self.inside[name])
        try:
            await asyncio.sleep(0.05)
        finally:
            self.inside[name] -= 1
        self.finished[name] += 1
        return {"ok": True}


async def test_fair_share_and_limits_together_keep_the_limit_the_weights_and_every_task_moving(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = make_config(
        nats_server,
        prefix,
        tmp_path,
        tenants={"fair_share": True, "dispatch_ahead": 4, "quotas": {"b": {"weight": 3}}},
        flow={
            "skill_keys": {"call": ["api:{name}"]},
            "limits": [{"key": "api:slow", "concurrency": CONCURRENCY, "requests": REQUESTS_PER_S, "window_s": 1.0}],
        },
    )
    calls = Calls()
    skills = SkillRegistry([Skill("call", calls.call)])

    def call(name: str, tenant: str) -> Any:
        return spec("call", {"name": name, "tenant": tenant})

    async with running_coordinator(config), connected_client(config) as client:
        async with running_worker(worker_config(config, node_id="early"), skills=skills):
            pass  # registers the skill; then A's flood is submitted with no worker running
        flood = await client.submit_many([call("slow", "a") for _ in range(FLOOD)], tenant="a")
        async with running_worker(worker_config(config, node_id="w1", concurrency=8), skills=skills):
            await eventually(lambda: len(calls.starts["slow"]) >= 6, what="tenant A's flood running")
            late = await client.submit_many([call("slow", "b") for _ in range(LATE)], tenant="b")
            slow_started_at_submit = len(calls.starts["slow"])
            # `claw limits list` counts the tasks held for their tenant's share in the key's lane too.
            reply = await client.call(verbs.LIMITS_LIST, LimitsListRequest())
            [view] = [v for v in reply.limits if v.key == "api:slow"]
            free = await client.submit_many([call("free", "c") for _ in range(FREE)], tenant="c")
            await eventually(lambda: calls.finished["free"] == FREE, timeout_s=60, what="tenant C's free calls done")
            # The unlimited calls of the same skill ran beside the limited backlog at once, not one per
            # limited start (as they did while limited tasks held the lane's places ahead).
            slow_started_meanwhile = len(calls.starts["slow"]) - slow_started_at_submit
            waiting = await client.get_task(late[-1].task_id)
            ids = [r.task_id for r in flood + late + free]
            final = await client.wait(ids, timeout_s=180)

    assert Counter(final.values()) == {TaskState.SUCCEEDED: FLOOD + LATE + FREE}  # nothing stuck
    assert view.waiting >= FLOOD + LATE - slow_started_at_submit - 10, view
    assert slow_started_meanwhile <= 12, slow_started_meanwhile
    assert waiting.state == TaskState.PENDING
    assert {"waiting for limit", "waiting for tenant share"} & {e.kind for e in waiting.events}

    # The limit: never more than CONCURRENCY at once, nor REQUESTS_PER_S starts in any second.
    assert calls.most["slow"] <= CONCURRENCY
    times = [at for at, _ in calls.starts["slow"]]
    busiest = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    assert busiest <= REQUESTS_PER_S, busiest

    # The weights among the tasks waiting for the limit: from B's first start to its last, B (weight 3
    # against A's 1) gets three starts in four, within +-10 %.
    tenants = [tenant for _, tenant in calls.starts["slow"]]
    first, last = tenants.index("b"), len(tenants) - 1 - tenants[::-1].index("b")
    window = Counter(tenants[first : last + 1])
    share = window["b"] / (last + 1 - first)
    assert 0.65 <= share <= 0.85, f"B got {share:.1%} of the limited starts while both waited; its weight gives 75 %"


async def test_with_both_on_tasks_held_by_either_survive_a_coordinator_restart_and_all_run_within_the_limit(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    """Tasks waiting for their tenant's share and tasks waiting for the limit are `pending` rows: a
    restarted coordinator sorts them into its lanes and the gate again, none is lost or run twice,
    and the limit holds across the restart."""
    config = make_config(
        nats_server,
        prefix,
        tmp_path,
        tenants={"fair_share": True, "dispatch_ahead": 4, "quotas": {"b": {"weight": 3}}},
        flow={"skill_keys": {"call": ["api:{name}"]}, "limits": [{"key": "api:slow", "concurrency": CONCURRENCY}]},
    )
    calls = Calls()
    skills = SkillRegistry([Skill("call", calls.call)])
    specs = [spec("call", {"name": "slow", "tenant": t}) for t in "ab" for _ in range(12)]
    async with running_coordinator(config), connected_client(config) as client:
        async with running_worker(worker_config(config, node_id="early"), skills=skills):
            pass
        submitted = await client.submit_many(specs[:12], tenant="a")
        submitted += await client.submit_many(specs[12:], tenant="b")
        free = await client.submit_many([spec("call", {"name": "free", "tenant": "c"}) for _ in range(3)], tenant="c")
        notes = {e.kind for r in submitted for e in (await client.get_task(r.task_id)).events}
        assert {"waiting for limit", "waiting for tenant share"} <= notes
    async with (
        running_coordinator(config),
        connected_client(config) as client,
        running_worker(worker_config(config, node_id="w1", concurrency=8), skills=skills),
    ):
        final = await client.wait([r.task_id for r in submitted + free], timeout_s=120)
    assert Counter(final.values()) == {TaskState.SUCCEEDED: 27}
    assert len(calls.starts["slow"]) == 24 and calls.finished["free"] == 3  # none run twice
    assert calls.most["slow"] <= CONCURRENCY
