"""After-commit listeners (real SQLite file, the real task writer): isolated, never in a commit's way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from common.errors import StorageError
from common.event_kinds import EventKind
from common.ids import new_id
from common.models import ListenerView
from common.states import Priority, TaskState
from coordinator.commit_listeners import CommitListeners
from coordinator.state_machine import transition
from storage.commits import Committed
from storage.database import Database
from storage.records import EventRecord, TaskRecord, WriteBatch
from storage.task_writer import TaskWriter
from tests.helpers import eventually


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[TaskWriter]:
    db = await Database.open(tmp_path / "claw.db")
    try:
        yield TaskWriter(db)
    finally:
        await db.close()


def submitted_batch() -> tuple[WriteBatch, TaskRecord]:
    """A new task, admitted and queued, as the submit pipeline commits it."""
    record = TaskRecord(
        task_id=new_id(), skill="echo", priority=Priority.NORMAL, state=TaskState.PENDING, input="{}",
        max_attempts=1, timeout_s=10.0, created_at=1.0, updated_at=1.0,
    )  # fmt: skip
    batch = WriteBatch(new_tasks=[record])
    batch.events.append(EventRecord.of(EventKind.SUBMITTED, record.task_id, 1.0, to_state=TaskState.PENDING))
    batch.events.append(transition(record, TaskState.QUEUED, at=2.0, kind=EventKind.QUEUED))
    return batch, record


class Recorder:
    """A queued listener that keeps what it was given; blocks while `gate` is clear."""

    def __init__(self) -> None:
        self.commits: list[Committed] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, commits: Sequence[Committed]) -> None:
        await self.gate.wait()
        self.commits.extend(commits)


async def serve(hooks: CommitListeners) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stopping = asyncio.Event()
    return stopping, asyncio.create_task(hooks.run(stopping))


async def test_listeners_get_each_commit_once_with_its_transitions_and_tasks_as_committed(writer: TaskWriter) -> None:
    hooks, recorder, inline = CommitListeners(), Recorder(), []
    hooks.add("recorder", recorder)
    hooks.add_inline("inline", inline.append)
    writer.on_commit = hooks.dispatch
    stopping, running = await serve(hooks)
    batch, record = submitted_batch()
    await writer.write_batch(batch)
    # Inline: done before the committer resumed.
    [commit] = inline
    assert [(t.event.kind, t.event.from_state, t.event.to_state) for t in commit.transitions()] == [
        (EventKind.SUBMITTED, None, TaskState.PENDING),
        (EventKind.QUEUED, TaskState.PENDING, TaskState.QUEUED),
    ]
    record.attempts = 7  # changed after the commit: the listeners keep the image as committed
    assert commit.tasks[record.task_id].state == TaskState.QUEUED
    assert commit.tasks[record.task_id].attempts == 0
    await eventually(lambda: len(recorder.commits) == 1, what="the queued listener's call")
    assert recorder.commits == [commit]
    stopping.set()
    await running


async def test_a_failed_transaction_reaches_no_listener(writer: TaskWriter) -> None:
    seen: list[Committed] = []
    hooks = CommitListeners()
    hooks.add_inline("seen", seen.append)
    writer.on_commit = hooks.dispatch
    batch, _ = submitted_batch()
    await writer.write_batch(batch)
    again, _ = submitted_batch()
    again.new_tasks = batch.new_tasks  # the same task id inserted twice: the transaction is refused
    with pytest.raises(StorageError):
        await writer.write_batch(again)
    assert len(seen) == 1


async def test_a_listener_that_raises_stops_neither_the_others_nor_the_commits(writer: TaskWriter) -> None:
    hooks, recorder, inline_seen = CommitListeners(), Recorder(), []

    def inline_boom(commit: Committed) -> None:
        raise RuntimeError("inline listener bug")

    async def queued_boom(commits: Sequence[Committed]) -> None:
        raise ValueError("queued listener bug")

    hooks.add_inline("inline-boom", inline_boom)
    hooks.add("queued-boom", queued_boom)
    hooks.add_inline("inline-ok", inline_seen.append)
    hooks.add("queued-ok", recorder)
    writer.on_commit = hooks.dispatch
    stopping, running = await serve(hooks)
    with capture_logs() as logs:
        for _ in range(5):
            await writer.write_batch(submitted_batch()[0])  # never raises
        await eventually(lambda: len(recorder.commits) == 5, what="the healthy queued listener's commits")
        await eventually(lambda: views(hooks)["queued-boom"].failures >= 1, what="the failing one's failure")
    assert len(inline_seen) == 5
    counts = views(hooks)
    assert counts["inline-boom"].failures == 5
    assert counts["inline-boom"].last_error == "RuntimeError: inline listener bug"
    assert counts["queued-boom"].last_error == "ValueError: queued listener bug"
    assert (counts["inline-ok"].failures, counts["queued-ok"].failures) == (0, 0)
    failures = [e for e in logs if e["event"] == "listeners.failed"]
    assert {e["listener"] for e in failures} == {"inline-boom", "queued-boom"}
    assert all(e["exc_info"] for e in failures)  # logged with the traceback
    assert all(e["log_level"] == "error" for e in failures)
    stopping.set()
    await running


async def test_a_slow_listener_blocks_no_commit_and_no_other_listener(writer: TaskWriter) -> None:
    hooks, slow, fast = CommitListeners(), Recorder(), Recorder()
    slow.gate.clear()  # stuck until released
    hooks.add("slow", slow)
    hooks.add("fast", fast)
    writer.on_commit = hooks.dispatch
    stopping, running = await serve(hooks)
    for _ in range(20):
        await asyncio.wait_for(writer.write_batch(submitted_batch()[0]), 30)
    await eventually(lambda: len(fast.commits) == 20, what="the other listener's commits")
    assert slow.commits == []
    slow.gate.set()
    await eventually(lambda: len(slow.commits) == 20, what="the slow listener to catch up")
    assert [c.events for c in slow.commits] == [c.events for c in fast.commits]  # same commits, same order
    stopping.set()
    await running


async def test_a_listener_whose_queue_is_full_loses_the_oldest_commits_counted() -> None:
    hooks, slow = CommitListeners(queue_max=3), Recorder()
    slow.gate.clear()
    hooks.add("slow", slow)
    stopping, running = await serve(hooks)
    commits = [Committed(events=(EventRecord.of(EventKind.LOG, f"t{i}", float(i)),), tasks={}) for i in range(7)]
    hooks.dispatch(commits[0])
    await eventually(lambda: views(hooks)["slow"].calls == 1, what="the first call (stuck at the gate)")
    with capture_logs() as logs:
        for commit in commits[1:]:
            hooks.dispatch(commit)
    assert (views(hooks)["slow"].dropped, views(hooks)["slow"].queued) == (3, 3)
    assert [e["event"] for e in logs] == ["listeners.overflow"]  # once per episode, not per drop
    slow.gate.set()
    await eventually(lambda: len(slow.commits) == 4, what="the rest")
    assert slow.commits == [commits[0], *commits[4:]]
    stopping.set()
    await running


async def test_held_listeners_get_the_commits_made_meanwhile_once_released(writer: TaskWriter) -> None:
    hooks, recorder, inline = CommitListeners(), Recorder(), []
    hooks.add("recorder", recorder)
    hooks.add_inline("inline", inline.append)
    writer.on_commit = hooks.dispatch
    stopping, running = await serve(hooks)
    with hooks.held():
        await writer.write_batch(submitted_batch()[0])
        await writer.write_batch(submitted_batch()[0])
        assert len(inline) == 2  # inline listeners are never held
        with pytest.raises(AssertionError, match="timed out"):
            await eventually(lambda: recorder.commits, timeout_s=0.3, what="a held commit (none may come)")
    await eventually(lambda: len(recorder.commits) == 2, what="the held commits")
    stopping.set()
    await running


async def test_a_hold_keeps_back_only_the_commits_made_while_it_is_open() -> None:
    """A committer that holds batch after batch (event intake) must not starve the others' commits."""
    hooks, recorder = CommitListeners(), Recorder()
    hooks.add("recorder", recorder)
    stopping, running = await serve(hooks)
    before, during = (Committed(events=(EventRecord.of(EventKind.LOG, t, 1.0),), tasks={}) for t in ("a", "b"))
    hooks.dispatch(before)  # queued, not yet delivered: the listener's task has not run
    with hooks.held():
        hooks.dispatch(during)
        await eventually(lambda: recorder.commits == [before], what="the commit made before the hold")
        with pytest.raises(AssertionError, match="timed out"):
            await eventually(lambda: len(recorder.commits) > 1, timeout_s=0.3, what="the held commit (none may come)")
    await eventually(lambda: recorder.commits == [before, during], what="the held commit, once released")
    stopping.set()
    await running


async def test_on_shutdown_a_queued_listener_still_gets_what_was_committed_before(writer: TaskWriter) -> None:
    hooks, recorder = CommitListeners(), Recorder()
    recorder.gate.clear()
    hooks.add("recorder", recorder)
    writer.on_commit = hooks.dispatch
    stopping, running = await serve(hooks)
    await writer.write_batch(submitted_batch()[0])
    await writer.write_batch(submitted_batch()[0])
    stopping.set()
    recorder.gate.set()
    await asyncio.wait_for(running, 30)
    assert len(recorder.commits) == 2


def test_names_are_unique() -> None:
    hooks = CommitListeners()
    hooks.add_inline("metrics", lambda commit: None)
    with pytest.raises(ValueError, match="'metrics' is registered already"):
        hooks.add_inline("metrics", lambda commit: None)


def views(hooks: CommitListeners) -> dict[str, ListenerView]:
    return {view.name: view for view in hooks.views()}
