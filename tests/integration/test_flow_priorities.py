"""Priorities among tasks waiting for a limit, in a real coordinator, worker and nats-server: high goes
first, but `normal` and `low` waiting on the same key still get their documented share of the key's
starts (1 in 5, 1 in 10) while high work keeps waiting too; they do not wait for the whole high
backlog (the gate, not the worker's pull loop, chooses who starts when a key is the bottleneck)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from common.states import Priority, TaskState
from communication.nats_server import EmbeddedNatsServer
from tests.conftest import make_config
from tests.helpers import connected_client, running_coordinator, running_worker, spec, worker_config
from worker.context import TaskContext
from worker.skills import Skill, SkillRegistry

HIGH = 60
LOWER = 5


@pytest.mark.parametrize(("lower", "every"), [(Priority.LOW, 10), (Priority.NORMAL, 5)])
async def test_a_lower_priority_waiting_for_a_limit_gets_its_share_under_a_high_backlog(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, lower: Priority, every: int
) -> None:
    config = make_config(
        nats_server,
        prefix,
        tmp_path,
        flow={"skill_keys": {"call": ["api:k"]}, "limits": [{"key": "api:k", "concurrency": 1}]},
    )
    order: list[Priority] = []

    async def call(ctx: TaskContext, input: dict[str, Any]) -> None:
        order.append(Priority(input["p"]))
        await asyncio.sleep(0.01)

    skills = SkillRegistry([Skill("call", call)])
    async with running_coordinator(config), connected_client(config) as client:
        async with running_worker(worker_config(config, node_id="early"), skills=skills):
            pass  # registers the skill; the tasks all wait before any worker runs
        # One high task takes the key first; the rest wait: the lower ones first, then the high backlog.
        first = await client.submit(spec("call", {"p": "high"}, priority=Priority.HIGH))
        lows = await client.submit_many([spec("call", {"p": lower.value}, priority=lower) for _ in range(LOWER)])
        highs = await client.submit_many([spec("call", {"p": "high"}, priority=Priority.HIGH) for _ in range(HIGH)])
        async with running_worker(worker_config(config, node_id="w1", concurrency=4), skills=skills):
            final = await client.wait([r.task_id for r in [first, *lows, *highs]], timeout_s=120)
    assert Counter(final.values()) == {TaskState.SUCCEEDED: 1 + HIGH + LOWER}
    # Up to the lower priority's last start, high was waiting throughout: the lower one had one start
    # in `every` (+-1 start for where the count began), not the starts left after the backlog.
    last = max(i for i, p in enumerate(order) if p is lower)
    assert last < 1 + HIGH, f"{lower} waited for the whole high backlog: {''.join(p.value[0] for p in order)}"
    assert LOWER * every - 2 <= last + 1 <= LOWER * every + 2, "".join(p.value[0] for p in order)
