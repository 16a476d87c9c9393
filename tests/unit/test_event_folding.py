"""Folding worker events into task state (real SQLite file): idempotent and fenced by attempt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from common.errors import BadEventError
from common.events import TaskEvent, TaskFailed, TaskLog, TaskProgress, TaskStarted, TaskSucceeded
from common.ids import new_id
from common.states import AttemptState, Priority, TaskState
from coordinator.event_folding import EventFolder
from coordinator.task_book import TaskBook
from storage.artifact_index import ArtifactIndex
from storage.database import Database
from storage.records import TaskRecord, WriteBatch
from storage.task_queries import TaskQueries
from storage.task_writer import TaskWriter


class Harness:
    def __init__(self, db: Database) -> None:
        self.writer = TaskWriter(db)
        self.queries = TaskQueries(db, ArtifactIndex(db))
        self.book = TaskBook(self.queries)
        self.folder = EventFolder(self.book)

    async def add_queued_task(self, state: TaskState = TaskState.QUEUED) -> str:
        record = TaskRecord(
            task_id=new_id(), skill="echo", priority=Priority.NORMAL, state=TaskState.PENDING, input="{}",
            max_attempts=3, timeout_s=10.0, created_at=1.0, updated_at=1.0,
        )  # fmt: skip
        batch = WriteBatch(new_tasks=[record])
        self.book.add(record)
        if state != TaskState.PENDING:
            batch.events.append(self.book.move(record, state, at=1.5, kind=state.value))
        await self.writer.write_batch(batch)
        return record.task_id

    async def fold(self, *events: TaskEvent) -> None:
        batch = WriteBatch()
        for event in events:
            await self.folder.fold(event, batch)
        await self.writer.write_batch(batch)
        self.book.release_finished(list(batch.changed_tasks.values()))

    async def view(self, task_id: str):  # type: ignore[no-untyped-def]
        view = await self.queries.get_task(task_id)
        assert view is not None
        return view


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    db = await Database.open(tmp_path / "claw.db")
    try:
        yield Harness(db)
    finally:
        await db.close()


def started(task_id: str, attempt: int = 1, node: str = "n1", at: float = 2.0) -> TaskStarted:
    return TaskStarted(event_id=new_id(), task_id=task_id, attempt=attempt, node_id=node, at=at)


def succeeded(task_id: str, attempt: int = 1, node: str = "n1", result: bytes = b'{"ok":1}') -> TaskSucceeded:
    return TaskSucceeded(
        event_id=new_id(), task_id=task_id, attempt=attempt, node_id=node, at=3.0, result=msgspec.Raw(result),
        started_at=2.0,
    )  # fmt: skip


def transitions(view) -> list[tuple[str, str | None, str | None]]:  # type: ignore[no-untyped-def]
    return [(e.kind, e.from_state, e.to_state) for e in view.events if e.to_state is not None]


async def test_started_then_succeeded_records_one_attempt_and_the_result(h: Harness) -> None:
    task_id = await h.add_queued_task()
    await h.fold(started(task_id))
    await h.fold(succeeded(task_id))
    view = await h.view(task_id)
    assert view.state == TaskState.SUCCEEDED
    assert bytes(view.result) == b'{"ok":1}'
    assert (view.attempts, view.node_id, view.started_at, view.finished_at) == (1, "n1", 2.0, 3.0)
    assert [(a.attempt, a.state) for a in view.attempt_log] == [(1, AttemptState.SUCCEEDED)]
    assert transitions(view)[-2:] == [("started", "queued", "running"), ("succeeded", "running", "succeeded")]


async def test_both_events_in_one_batch_give_the_same_result(h: Harness) -> None:
    task_id = await h.add_queued_task()
    await h.fold(started(task_id), succeeded(task_id))
    view = await h.view(task_id)
    assert view.state == TaskState.SUCCEEDED
    assert len(view.attempt_log) == 1 and view.attempt_log[0].started_at == 2.0


async def test_outcome_without_started_passes_through_running(h: Harness) -> None:
    task_id = await h.add_queued_task()
    await h.fold(succeeded(task_id))
    view = await h.view(task_id)
    assert view.state == TaskState.SUCCEEDED
    assert transitions(view)[-2:] == [("started (implied)", "queued", "running"), ("succeeded", "running", "succeeded")]


async def test_repeated_started_for_the_same_attempt_changes_nothing(h: Harness) -> None:
    task_id = await h.add_queued_task()
    await h.fold(started(task_id))
    await h.fold(started(task_id))
    view = await h.view(task_id)
    assert view.state == TaskState.RUNNING
    assert [k for k, _, _ in transitions(view)].count("started") == 1


async def test_redelivered_event_is_recorded_once(h: Harness) -> None:
    task_id = await h.add_queued_task()
    progress = TaskProgress(event_id=new_id(), task_id=task_id, attempt=1, node_id="n1", at=2.5, percent=50.0)
    await h.fold(started(task_id), progress)
    await h.fold(progress)  # the same event delivered again
    view = await h.view(task_id)
    assert [e.kind for e in view.events].count("progress") == 1


async def test_newer_attempt_marks_the_running_one_lost(h: Harness) -> None:
    task_id = await h.add_queued_task()
    await h.fold(started(task_id, attempt=1, node="dead-node"))
    await h.fold(started(task_id, attempt=2, node="n2", at=40.0))
    view = await h.view(task_id)
    assert (view.state, view.attempts, view.node_id) == (TaskState.RUNNING, 2, "n2")
    assert [(a.attempt, a.node_id, a.state) for a in view.attempt_log] == [
        (1, "dead-node", AttemptState.LOST),
        (2, "n2", AttemptState.RUNNING),
    ]
    assert ("lost", "running", "queued") in transitions(view)


async def test_late_result_of_a_superseded_attempt_is_fenced_off(h: Harness) -> None:
    task_id = await h.add_queued_task()
    await h.fold(started(task_id, attempt=1, node="zombie"))
    await h.fold(started(task_id, attempt=2, node="n2"))
    await h.fold(succeeded(task_id, attempt=1, node="zombie", result=b'"zombie"'))
    view = await h.view(task_id)
    assert view.state == TaskState.RUNNING and bytes(view.result) == b"null"
    ignored = [e for e in view.events if e.kind == "succeeded (ignored)"]
    assert len(ignored) == 1 and b"declared lost" in bytes(ignored[0].data)
    await h.fold(succeeded(task_id, attempt=2, node="n2", result=b'"current"'))
    view = await h.view(task_id)
    assert view.state == TaskState.SUCCEEDED and bytes(view.result) == b'"current"'


async def test_a_second_outcome_after_the_task_finished_is_ignored(h: Harness) -> None:
    task_id = await h.add_queued_task()
    await h.fold(started(task_id), succeeded(task_id))
    late = TaskFailed(event_id=new_id(), task_id=task_id, attempt=1, node_id="n1", at=9.0, error_type="X", message="m")
    await h.fold(late)
    view = await h.view(task_id)
    assert view.state == TaskState.SUCCEEDED and view.error_type is None
    assert any(e.kind == "failed (ignored)" for e in view.events)


def failed(task_id: str, attempt: int = 1, retry_in_s: float | None = None, at: float = 4.0) -> TaskFailed:
    return TaskFailed(
        event_id=new_id(), task_id=task_id, attempt=attempt, node_id="n1", at=at, error_type="PermanentError",
        message="boom", traceback="Traceback ...", started_at=2.0, retry_in_s=retry_in_s,
    )  # fmt: skip


async def test_final_failure_ends_dead_with_error_and_traceback_and_is_dead_lettered(h: Harness) -> None:
    task_id = await h.add_queued_task()
    batch = WriteBatch()
    for event in (started(task_id), failed(task_id)):
        await h.folder.fold(event, batch)
    await h.writer.write_batch(batch)
    assert [r.task_id for r in batch.dead_letters] == [task_id]
    view = await h.view(task_id)
    assert (view.state, view.error_type, view.error_message, view.error_traceback) == (
        TaskState.DEAD, "PermanentError", "boom", "Traceback ...",
    )  # fmt: skip
    assert view.attempt_log[0].state == AttemptState.FAILED


async def test_final_failure_ends_failed_when_dead_lettering_is_off(h: Harness) -> None:
    h.folder = EventFolder(h.book, dead_letter=False)
    task_id = await h.add_queued_task()
    batch = WriteBatch()
    for event in (started(task_id), failed(task_id)):
        await h.folder.fold(event, batch)
    await h.writer.write_batch(batch)
    assert batch.dead_letters == []
    assert (await h.view(task_id)).state == TaskState.FAILED


async def test_retryable_failure_waits_in_retrying_then_the_next_attempt_runs(h: Harness) -> None:
    task_id = await h.add_queued_task()
    await h.fold(started(task_id), failed(task_id, retry_in_s=2.5, at=4.0))
    view = await h.view(task_id)
    assert (view.state, view.next_attempt_at, view.error_message) == (TaskState.RETRYING, 6.5, "boom")
    await h.fold(failed(task_id, retry_in_s=2.5, at=4.0))  # the same failure delivered again
    assert [k for k, _, _ in transitions(await h.view(task_id))].count("retrying") == 1
    await h.fold(started(task_id, attempt=2, at=7.0), succeeded(task_id, attempt=2))
    view = await h.view(task_id)
    assert (view.state, view.attempts, view.next_attempt_at) == (TaskState.SUCCEEDED, 2, None)
    assert [(a.attempt, a.state) for a in view.attempt_log] == [(1, AttemptState.FAILED), (2, AttemptState.SUCCEEDED)]
    assert ("started", "retrying", "running") in transitions(view)


async def test_redelivered_final_failure_of_a_dead_task_asks_for_the_dead_letter_again(h: Harness) -> None:
    task_id = await h.add_queued_task()
    final = failed(task_id)
    await h.fold(started(task_id), final)
    batch = WriteBatch()
    await h.folder.fold(final, batch)
    assert [r.task_id for r in batch.dead_letters] == [task_id]
    assert batch.changed_tasks == {}


async def test_log_lines_join_the_timeline(h: Harness) -> None:
    task_id = await h.add_queued_task()
    await h.fold(
        started(task_id), TaskLog(event_id=new_id(), task_id=task_id, attempt=1, node_id="n1", at=2.1, message="hi")
    )
    view = await h.view(task_id)
    [line] = [e for e in view.events if e.kind == "log"]
    assert msgspec.json.decode(bytes(line.data)) == {"level": "info", "message": "hi"}


async def test_event_for_an_unknown_task_is_refused_and_stages_nothing(h: Harness) -> None:
    batch = WriteBatch()
    with pytest.raises(BadEventError, match="there is no task 01UNKNOWNTASK"):
        await h.folder.fold(started("01UNKNOWNTASK0000000000000"), batch)
    assert not batch
    assert await h.queries.get_task("01UNKNOWNTASK0000000000000") is None


async def test_an_event_the_transition_table_forbids_is_refused_and_changes_nothing(h: Harness) -> None:
    """The probe of issue 9: `succeeded` for a task waiting for approval."""
    task_id = await h.add_queued_task(state=TaskState.WAITING_APPROVAL)
    record = h.book.get(task_id)
    assert record is not None
    before, counts = h.book.snapshot(record), h.book.counts()
    batch = WriteBatch()
    with pytest.raises(
        BadEventError, match="succeeded event for attempt 1 does not apply to a task that is waiting_approval"
    ):
        await h.folder.fold(succeeded(task_id), batch)
    assert h.book.snapshot(record) == before and h.book.counts() == counts and not batch
    assert h.book.waiting("echo") == 0


async def test_a_fold_that_fails_half_way_is_undone_whole(h: Harness) -> None:
    """A result that is not UTF-8 is found only after the task passed through queued and running."""
    task_id = await h.add_queued_task(state=TaskState.PENDING)
    record = h.book.get(task_id)
    assert record is not None
    before, counts, waiting = h.book.snapshot(record), h.book.counts(), h.book.waiting("echo")
    batch = WriteBatch()
    await h.folder.fold(
        TaskLog(event_id=new_id(), task_id=task_id, attempt=1, node_id="n1", at=2.0, message="a"), batch
    )
    staged = len(batch.events)
    with pytest.raises(BadEventError, match="not valid UTF-8"):
        await h.folder.fold(succeeded(task_id, result=b'"\xff"'), batch)
    assert h.book.snapshot(record) == before and h.book.counts() == counts and h.book.waiting("echo") == waiting
    assert len(batch.events) == staged and not batch.attempts and not batch.changed_tasks
    await h.fold(succeeded(task_id))  # the real outcome still applies
    assert (await h.view(task_id)).state == TaskState.SUCCEEDED


async def test_event_log_is_append_only(h: Harness, tmp_path: Path) -> None:
    import sqlite3

    task_id = await h.add_queued_task()
    conn = sqlite3.connect(tmp_path / "claw.db")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET kind = 'x' WHERE task_id = ?", (task_id,))
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events WHERE task_id = ?", (task_id,))
    finally:
        conn.close()


async def test_a_cancel_that_overtakes_started_still_counts_the_cancelled_attempt(h: Harness) -> None:
    from common.events import TaskCancelled

    task_id = await h.add_queued_task()
    record = h.book.get(task_id)
    assert record is not None
    batch = WriteBatch()  # the operator's cancel lands before the worker's `started`
    batch.events.append(h.book.move(record, TaskState.CANCELLED, at=2.5, kind="cancelled"))
    batch.touch(record)
    await h.writer.write_batch(batch)
    confirm = TaskCancelled(event_id=new_id(), task_id=task_id, attempt=1, node_id="n1", at=2.6, started_at=2.0)
    await h.fold(started(task_id), confirm)
    view = await h.view(task_id)
    assert (view.state, view.attempts, view.node_id) == (TaskState.CANCELLED, 1, "n1")
    assert [(a.attempt, a.state) for a in view.attempt_log] == [(1, AttemptState.CANCELLED)]


async def test_an_outcome_that_overtakes_queued_keeps_the_times_in_order(h: Harness) -> None:
    record = TaskRecord(
        task_id=new_id(), skill="echo", priority=Priority.NORMAL, state=TaskState.PENDING, input="{}",
        max_attempts=3, timeout_s=10.0, created_at=1.0, updated_at=1.0,
    )  # fmt: skip
    h.book.add(record)
    await h.writer.write_batch(WriteBatch(new_tasks=[record]))
    # The worker ran it (2.0 to 3.0) before the coordinator wrote `queued` for its publish.
    await h.fold(succeeded(record.task_id))
    view = await h.view(record.task_id)
    assert (view.queued_at, view.started_at, view.finished_at) == (2.0, 2.0, 3.0)
    assert [(e.kind, e.at) for e in view.events if e.to_state] == [
        ("queued", 2.0), ("started (implied)", 2.0), ("succeeded", 3.0),
    ]  # fmt: skip


async def _cancel(h: Harness, task_id: str) -> None:
    record = h.book.get(task_id)
    assert record is not None
    batch = WriteBatch()
    batch.events.append(h.book.move(record, TaskState.CANCELLED, at=2.5, kind="cancelled"))
    batch.touch(record)
    await h.writer.write_batch(batch)


@pytest.mark.parametrize("started_first", [False, True])
async def test_an_attempt_that_finished_before_the_cancel_reached_it_is_recorded(
    h: Harness, started_first: bool
) -> None:
    task_id = await h.add_queued_task()
    if started_first:
        await h.fold(started(task_id))
    await _cancel(h, task_id)  # the worker's short attempt had already begun (`started` deferred)
    await h.fold(succeeded(task_id))
    view = await h.view(task_id)
    assert (view.state, view.attempts, view.node_id) == (TaskState.CANCELLED, 1, "n1")
    assert [(a.attempt, a.state, a.finished_at) for a in view.attempt_log] == [(1, AttemptState.SUCCEEDED, 3.0)]
    assert "succeeded (ignored)" in [e.kind for e in view.events]
    assert view.result is None or bytes(view.result) in (b"", b"null")  # the outcome itself stays ignored
