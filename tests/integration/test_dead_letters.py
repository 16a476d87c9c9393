"""Dead letters after replays: one letter per dead task, counts that agree, attempts per series.

A replayed task that dies again must not leave two letters: the DLQ holds one message per dead task
(its latest series, with the attempts of the earlier ones), so `dlq list`, `claw status`, the
`claw_dlq_messages` gauge and the number of dead tasks all say the same.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from common.config import ClawConfig
from common.errors import PermanentError, RetryableError
from common.models import Backoff
from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from tests.conftest import make_config
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online
from worker.context import TaskContext
from worker.skills import Skill, SkillRegistry

QUICK = Backoff(base_s=0.05, factor=1.0, max_s=0.05, jitter=0.0)


async def always_fails(ctx: TaskContext, input: dict[str, Any]) -> None:
    raise RetryableError(f"attempt {ctx.attempt} failed")


async def fails_at_once(ctx: TaskContext, input: dict[str, Any]) -> None:
    raise PermanentError("no point in trying again")


class Gate:
    """A skill that fails for good while `failing`, else waits for `release` and succeeds."""

    def __init__(self) -> None:
        self.failing = True
        self.release = asyncio.Event()

    async def gated(self, ctx: TaskContext, input: dict[str, Any]) -> str:
        if self.failing:
            raise PermanentError("closed")
        await self.release.wait()
        return "through"

    def registry(self) -> SkillRegistry:
        return SkillRegistry([Skill("gated", self.gated)])


def skills() -> SkillRegistry:
    return SkillRegistry([Skill("doomed", always_fails), Skill("hopeless", fails_at_once)])


@pytest.fixture
def metrics_config(nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path) -> ClawConfig:
    return make_config(nats_server, prefix, tmp_path, coordinator={"metrics_port": 0})


async def dead(client: ClawClient, ids: list[str]) -> None:
    assert await client.wait(ids, timeout_s=30) == dict.fromkeys(ids, TaskState.DEAD)


async def test_a_replayed_task_that_dies_again_has_one_dead_letter_with_every_series(
    metrics_config: ClawConfig,
) -> None:
    async with (
        running_coordinator(metrics_config) as coordinator,
        running_worker(metrics_config, skills=skills()),
        connected_client(metrics_config) as client,
    ):
        await wait_nodes_online(client, 1)
        submitted = await client.submit_many(
            [spec("doomed", {"n": n}, max_attempts=3, backoff=QUICK) for n in range(3)]
        )
        ids = [r.task_id for r in submitted]
        await dead(client, ids)
        await eventually(lambda: _letter_count(client, 3), what="three dead letters")

        again = ids[0]
        [replayed] = await client.dlq_replay(again)
        assert replayed.changed
        await dead(client, [again])
        await eventually(lambda: _letter_of(client, again, attempts=6), what="the re-dead task's new letter")

        letters = await client.dlq_list()
        assert sorted(v.letter.task_id or "" for v in letters) == sorted(ids)  # one each, no duplicate
        [letter] = [v.letter for v in letters if v.letter.task_id == again]
        assert [(a.attempt, a.series) for a in letter.attempts] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
        assert letter.series == 2

        status = await client.status()
        assert status.dlq_messages == 3 == status.tasks_by_state["dead"]
        await coordinator.refresh_metrics()
        assert coordinator.metrics is not None
        assert coordinator.metrics.registry.get_sample_value("claw_dlq_messages") == 3

        task = await client.get_task(again)
        assert (task.attempts, task.attempt_offset, task.series, task.max_attempts) == (6, 3, 2, 3)
        assert [a.series for a in task.attempt_log] == [1, 1, 1, 2, 2, 2]


async def test_a_re_run_takes_the_letter_out_of_the_dlq_and_replaying_twice_changes_nothing(
    config: ClawConfig,
) -> None:
    gate = Gate()
    async with (
        running_coordinator(config),
        running_worker(config, skills=gate.registry()),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        first, second = await client.submit_many([spec("gated", {"n": n}) for n in range(2)])
        await dead(client, [first.task_id, second.task_id])
        await eventually(lambda: _letter_count(client, 2), what="two dead letters")

        # Re-run (`claw task retry`) or replayed, a task is no longer dead: its letter leaves the DLQ.
        gate.failing = False
        assert (await client.retry(first.task_id)).changed
        [again] = await client.dlq_replay(second.task_id)
        assert again.changed
        [twice] = await client.dlq_replay(second.task_id)
        assert not twice.changed and "already replayed" in twice.note
        assert await client.dlq_list() == []
        status = await client.status()
        assert status.dlq_messages == 0 and "dead" not in status.tasks_by_state
        gate.release.set()
        assert await client.wait([first.task_id, second.task_id], timeout_s=20) == {
            first.task_id: TaskState.SUCCEEDED,
            second.task_id: TaskState.SUCCEEDED,
        }
        assert await client.dlq_list() == []


async def test_replay_all_and_purge_after_a_re_death(config: ClawConfig) -> None:
    async with (
        running_coordinator(config),
        running_worker(config, skills=skills()),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        results = await client.submit_many(
            [spec("hopeless", {"n": n}) for n in range(4)] + [spec("doomed", {"n": 9}, max_attempts=1)]
        )
        ids = [r.task_id for r in results]
        await dead(client, ids)
        await eventually(lambda: _letter_count(client, 5), what="five dead letters")
        await client.dlq_replay(ids[0])
        await dead(client, ids)
        await eventually(lambda: _letter_of(client, ids[0], attempts=2), what="the re-dead task's new letter")

        # --all replays each dead task once, whatever its history.
        replays = await client.dlq_replay(all=True)
        assert sorted(r.task_id for r in replays) == sorted(ids)
        assert all(r.changed for r in replays)
        await dead(client, ids)
        await eventually(lambda: _letter_count(client, 5), what="five dead letters again")

        # Purging one skill removes its letters, whichever series they hold; then the rest.
        assert await client.dlq_purge(skill="doomed") == 1
        assert sorted(v.letter.task_id or "" for v in await client.dlq_list()) == sorted(ids[:4])
        assert await client.dlq_purge() == 4
        assert await client.dlq_list() == []
        assert (await client.status()).dlq_messages == 0


async def _letter_count(client: ClawClient, count: int) -> bool:
    return len(await client.dlq_list()) == count


async def _letter_of(client: ClawClient, task_id: str, *, attempts: int) -> bool:
    return any(v.letter.task_id == task_id and len(v.letter.attempts) == attempts for v in await client.dlq_list())
