"""A worker forging dead letters. Workers may not publish on the DLQ at all (a letter there is
believed as a task's fate by `claw dlq list` and `replay`): the server refuses a letter a worker
publishes there, and a worker's report of a message it could not decode (`<prefix>.events.<node>.poison`)
is checked by the coordinator, which writes the letter itself. A forged letter never appears in
`claw dlq list`, a cancel stays a cancel, and a real poison message and a real dead task still
reach the DLQ.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from common.errors import TaskNotFoundError
from common.ids import new_id
from common.models import DeadLetter, TaskMessage
from common.states import Priority, TaskState
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


async def _letters(client: ClawClient) -> list[DeadLetter]:
    return [v.letter for v in await client.dlq_list()]


async def test_a_workers_forged_dead_letter_is_refused_and_never_replays_a_cancelled_task(
    cluster: SecuredCluster,
) -> None:
    async with cluster.client("alice") as alice, cluster.client("oscar") as admin:
        held = (await alice.submit(spec("probe.wait", {"seconds": 120}))).task_id
        await eventually(lambda: held in cluster.ran, what="the task running on w1", timeout_s=30)
        await admin.cancel(held)
        assert await alice.wait([held], timeout_s=30) == {held: TaskState.CANCELLED}
        dead = (await alice.submit(spec("fail", {"message": "x", "retryable": False}))).task_id
        assert await alice.wait([dead], timeout_s=30) == {dead: TaskState.DEAD}

        async def dead_lettered() -> bool:
            return dead in [letter.task_id for letter in await _letters(admin)]

        await eventually(dead_lettered, what="the real dead letter", timeout_s=30)

        async with cluster.connect("w2") as nc:
            # Straight onto the DLQ, on the skill's shared subject and on the task's own: refused.
            for subject in (f"{PREFIX}.dlq.probe-wait", f"{PREFIX}.dlq.probe-wait.{held}"):
                await nc.publish(subject, _forged(held))
                await eventually(lambda s=subject: cluster.violations("Publish", f'"{s}"'), what=f"{subject} refused")
            # As a "poison report" under its own node id: a letter naming a task, and one holding a
            # task message that decodes (a lie about a real task), are refused by the coordinator.
            js = nc.jetstream()
            await js.publish(f"{PREFIX}.events.w2.poison", _forged(held))
            task = TaskMessage(task_id=held, skill="probe.wait", input=msgspec.Raw(b"{}"), priority=Priority.NORMAL,
                               timeout_s=60, max_attempts=1, submitted_at=time.time())  # fmt: skip
            decodable = DeadLetter(
                kind="poison", reason=FORGED, dead_at=time.time(), skill="probe.wait",
                subject=f"{PREFIX}.tasks.normal.probe-wait", stream_seq=1,
                raw_base64=base64.b64encode(encode(task)).decode(),
            )  # fmt: skip
            await js.publish(f"{PREFIX}.events.w2.poison", encode(decodable))

        # A real poison message (bytes no worker can decode) still reaches the DLQ, reported by w1.
        async with cluster.connect("coordinator") as nc:
            await nc.jetstream().publish(cluster.subjects.task(Priority.NORMAL, "echo"), b"\x00\xffnot a task")

        async def poison_listed() -> list[DeadLetter]:
            return [letter for letter in await _letters(admin) if letter.kind == "poison"]

        [poison] = await eventually(poison_listed, what="the real poison letter", timeout_s=30)
        assert (poison.skill, poison.reported_by) == ("echo", "w1")
        assert base64.b64decode(poison.raw_base64 or "") == b"\x00\xffnot a task"

        async def refused_reports() -> list[str]:
            found = [q.reason for q in await admin.quarantine_list() if q.subject == f"{PREFIX}.events.w2.poison"]
            return found if len(found) == 2 else []

        reasons = await eventually(refused_reports, what="the forged reports quarantined")
        assert all(r.startswith("refused: poison report of node w2") for r in reasons), reasons
        letters = await _letters(admin)
        assert held not in [letter.task_id for letter in letters]
        assert not [letter for letter in letters if letter.reason == FORGED]

        results = {r.task_id: r for r in await admin.dlq_replay(all=True)}
        assert results[dead].changed  # the real one is replayed
        assert held not in results
        with pytest.raises(TaskNotFoundError, match="has no dead letter"):
            await admin.dlq_replay(held)
        assert (await admin.task_states([held]))[held] == TaskState.CANCELLED
        assert cluster.ran.count(held) == 1
        assert new_id() not in [letter.task_id for letter in await _letters(admin)]
