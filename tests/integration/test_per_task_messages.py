"""Guards of the coordinator's per-task cost that count messages, not time (docs/Performance.md).

The structural refactor of issue 10 made the broadcast announce every admission: one more message
per submitted task on `<prefix>.updates.*` that nobody could be waiting for, since a task id the
coordinator made is known to its client only from the submit's reply. These tests count what the
broadcast publishes, on a real nats-server, with a real coordinator and worker or a real task writer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import msgspec
from nats.aio.msg import Msg

from common.clock import SYSTEM_CLOCK
from common.config import ClawConfig
from common.event_kinds import EventKind
from common.ids import new_id
from common.models import TaskUpdate
from common.states import Priority, TaskState
from communication.api_client import ClawClient
from coordinator.broadcast import TaskBroadcast
from coordinator.state_machine import transition
from storage.commits import Committed
from storage.database import Database
from storage.records import EventRecord, TaskRecord, WriteBatch
from storage.task_writer import TaskWriter
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online

TASKS = 40
# Per echo task at most: queued, running, succeeded (running and succeeded often share a commit).
MAX_UPDATES_PER_TASK = 3
SENTINEL = "sentinel"


class Updates:
    """Every `TaskUpdate` seen on `<prefix>.updates.*`, by task id, in arrival order."""

    def __init__(self) -> None:
        self.by_task: dict[str, list[TaskState]] = defaultdict(list)
        self.sentinel = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        update = msgspec.json.decode(msg.data, type=TaskUpdate)
        if update.task_id == SENTINEL:
            self.sentinel.set()
        else:
            self.by_task[update.task_id].append(update.state)


async def subscribe(client: ClawClient, updates: Updates) -> None:
    await client.conn.nc.subscribe(client.conn.subjects.updates_all, cb=updates.on_msg)
    await client.conn.nc.flush()


async def test_a_submitted_task_is_never_broadcast_as_pending_and_at_most_three_times_on_its_way(
    config: ClawConfig,
) -> None:
    updates = Updates()
    async with (
        running_coordinator(config),
        running_worker(config),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        await subscribe(client, updates)
        submitted = await client.submit_many([spec("echo", {"n": i}) for i in range(TASKS)])
        ids = [r.task_id for r in submitted]
        final = await client.wait(ids, timeout_s=60)
        assert set(final.values()) == {TaskState.SUCCEEDED}
        await eventually(
            lambda: all(updates.by_task[t][-1:] == [TaskState.SUCCEEDED] for t in ids),
            what="the broadcast of every task's success",
        )
    counts = {t: len(updates.by_task[t]) for t in ids}
    announced_pending = [t for t in ids if TaskState.PENDING in updates.by_task[t]]
    assert announced_pending == [], "the admission of coordinator-made ids was broadcast"
    assert max(counts.values()) <= MAX_UPDATES_PER_TASK, counts
    assert set(updates.by_task) == set(ids)


def admitted(*, id_from_client: bool) -> TaskRecord:
    """A task as admission makes it: a fresh ULID, or an id the client chose."""
    return TaskRecord(
        task_id=new_id(), skill="echo", priority=Priority.NORMAL, state=TaskState.PENDING, input="{}",
        max_attempts=1, timeout_s=10.0, created_at=1.0, updated_at=1.0, id_from_client=id_from_client,
    )  # fmt: skip


async def commit(writer: TaskWriter, batch: WriteBatch) -> Committed:
    """Write `batch` through the real writer; the commit as its listeners receive it."""
    received: asyncio.Future[Committed] = asyncio.get_running_loop().create_future()
    writer.on_commit = received.set_result
    await writer.write_batch(batch)
    return await asyncio.wait_for(received, 10)


async def test_the_broadcast_announces_an_admission_only_under_an_id_the_client_chose(
    config: ClawConfig, tmp_path: Path
) -> None:
    made, chosen = admitted(id_from_client=False), admitted(id_from_client=True)
    admission = WriteBatch(new_tasks=[made, chosen])
    for record in (made, chosen):
        admission.events.append(EventRecord.of(EventKind.SUBMITTED, record.task_id, 1.0, to_state=TaskState.PENDING))
    db = await Database.open(tmp_path / "claw.db")
    updates = Updates()
    try:
        writer = TaskWriter(db)
        first = await commit(writer, admission)
        assert first.fresh_ids == {made.task_id}
        queueing = WriteBatch()
        for record in (made, chosen):
            queueing.events.append(transition(record, TaskState.QUEUED, at=2.0, kind=EventKind.QUEUED))
            queueing.touch(record)
        second = await commit(writer, queueing)
        assert second.fresh_ids == frozenset()
        async with connected_client(config) as client:
            await subscribe(client, updates)
            broadcast = TaskBroadcast(client.conn)
            await broadcast.on_commits([first])
            await broadcast.on_commits([second])
            # Delivered in publish order: once the sentinel is here, so is everything before it.
            sentinel = TaskUpdate(task_id=SENTINEL, state=TaskState.PENDING, attempt=0, at=SYSTEM_CLOCK.now())
            await client.conn.nc.publish(client.conn.subjects.updates(SENTINEL), msgspec.json.encode(sentinel))
            await asyncio.wait_for(updates.sentinel.wait(), 10)
    finally:
        await db.close()
    assert updates.by_task[made.task_id] == [TaskState.QUEUED]
    assert updates.by_task[chosen.task_id] == [TaskState.PENDING, TaskState.QUEUED]
