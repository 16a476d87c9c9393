"""`claw bench --prefill N`: a state database that already holds N finished tasks.

The rows are written by the coordinator's own storage code (`TaskWriter.write_batch`), as a
coordinator writes a task that succeeded: the task row, its attempt, and its `submitted`, `queued`,
`started` and `succeeded` events on the hash chain. They finished over the 30 days before now, as
a month of a busy cluster would leave them, so the window statistics see only their share.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

from common.event_kinds import EventKind
from common.ids import new_id
from common.states import AttemptState, Priority, TaskState
from storage.database import Database
from storage.records import AttemptRecord, EventRecord, TaskRecord, WriteBatch
from storage.task_writer import TaskWriter

BATCH = 2000
SPREAD_S = 30 * 24 * 3600.0
INPUT = '{"n":0}'


async def prefill_database(db_path: Path, n: int, progress: Callable[[int], None] | None = None) -> float:
    """Write `n` succeeded `echo` tasks into the database at `db_path`; returns the seconds it took."""
    started = time.perf_counter()
    db = await Database.open(db_path)
    try:
        store = TaskWriter(db)
        now = time.time()
        step = SPREAD_S / max(n, 1)
        for first in range(0, n, BATCH):
            batch = WriteBatch()
            for i in range(first, min(first + BATCH, n)):
                _add_finished(batch, created=now - SPREAD_S + i * step)
            await store.write_batch(batch)
            if progress is not None and (first // BATCH) % 50 == 49:
                progress(first + BATCH)
    finally:
        await db.close()
    return time.perf_counter() - started


def _add_finished(batch: WriteBatch, *, created: float) -> None:
    task_id = new_id()
    queued, started, finished = created + 0.001, created + 0.003, created + 0.004
    batch.new_tasks.append(
        TaskRecord(
            task_id=task_id,
            skill="echo",
            priority=Priority.NORMAL,
            state=TaskState.SUCCEEDED,
            input=INPUT,
            max_attempts=3,
            timeout_s=60.0,
            created_at=created,
            updated_at=finished,
            attempts=1,
            submitter="bench",
            node_id="bench-w1",
            queued_at=queued,
            started_at=started,
            finished_at=finished,
            result=INPUT,
            trace_id=secrets.token_hex(16),
            risk="read_only",
            guard_rule="default",
        )
    )
    batch.put_attempt(
        AttemptRecord(task_id, 1, "bench-w1", AttemptState.SUCCEEDED, started_at=started, finished_at=finished)
    )
    batch.events += [
        EventRecord.of(EventKind.SUBMITTED, task_id, created, to_state=TaskState.PENDING, data={"submitter": "bench"}),
        EventRecord.of(EventKind.QUEUED, task_id, queued, from_state=TaskState.PENDING, to_state=TaskState.QUEUED),
        EventRecord.of(
            EventKind.STARTED,
            task_id,
            started,
            attempt=1,
            from_state=TaskState.QUEUED,
            to_state=TaskState.RUNNING,
            node_id="bench-w1",
        ),
        EventRecord.of(
            EventKind.SUCCEEDED,
            task_id,
            finished,
            attempt=1,
            event_id=new_id(),
            from_state=TaskState.RUNNING,
            to_state=TaskState.SUCCEEDED,
            node_id="bench-w1",
        ),
    ]
