"""A worker forging dead letters: workers may publish poison letters on `<prefix>.dlq.<skill>`, so a
letter there naming a task is not proof the task died. A forged letter for a cancelled task (or an
unknown one) must not make `claw dlq replay` run it: a cancel stays a cancel, the forged letters are
dropped, and a real dead task is still replayed alongside.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.errors import InvalidInputError
from common.ids import new_id
from common.models import DeadLetter
from common.states import TaskState
from communication.api_client import ClawClient
from communication.codec import encode
from tests.helpers import eventually, spec
from tests.security.bus import PREFIX, SecuredCluster, secured_cluster

FORGED = "forged by a worker"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SecuredCluster]:
    async with secured_cluster(tmp_path) as running:
        yield running


def _forged(task_id: str) -> bytes:
    letter = DeadLetter(
        kind="task",
        reason=FORGED,
        dead_at=time.time(),
        skill="probe.wait",
        subject=f"{PREFIX}.dlq.probe-wait",
        task_id=task_id,
    )
    return encode(letter)


async def _forge(cluster: SecuredCluster, *task_ids: str) -> None:
    """w2, a worker, publishes letters on the skill's shared DLQ subject (where poison letters go)."""
    async with cluster.connect("w2") as nc:
        js = nc.jetstream()
        for task_id in task_ids:
            await js.publish(f"{PREFIX}.dlq.probe-wait", _forged(task_id))


async def _letters(client: ClawClient) -> list[str | None]:
    return [v.letter.task_id for v in await client.dlq_list()]


async def test_a_workers_forged_dead_letter_never_replays_a_cancelled_task(cluster: SecuredCluster) -> None:
    async with cluster.client("alice") as alice, cluster.client("oscar") as admin:
        held = (await alice.submit(spec("probe.wait", {"seconds": 120}))).task_id
        await eventually(lambda: held in cluster.ran, what="the task running on w1", timeout_s=30)
        await admin.cancel(held)
        assert await alice.wait([held], timeout_s=30) == {held: TaskState.CANCELLED}
        dead = (await alice.submit(spec("fail", {"message": "x", "retryable": False}))).task_id
        assert await alice.wait([dead], timeout_s=30) == {dead: TaskState.DEAD}

        async def dead_lettered() -> bool:
            return dead in await _letters(admin)

        await eventually(dead_lettered, what="the real dead letter", timeout_s=30)

        await _forge(cluster, held, new_id())
        assert held in await _letters(admin)  # listed, as any letter on the DLQ
        results = {r.task_id: r for r in await admin.dlq_replay(all=True)}
        assert results[dead].changed  # the real one is replayed
        assert held not in results or not results[held].changed
        assert set(results) <= {dead, held}  # the unknown task's letter replays nothing

        await _forge(cluster, held)
        with pytest.raises(InvalidInputError, match="not dead"):
            await admin.dlq_replay(held)

        assert (await admin.task_states([held]))[held] == TaskState.CANCELLED
        assert cluster.ran.count(held) == 1
        assert held not in await _letters(admin)  # the forged letters were dropped
