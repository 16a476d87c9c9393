"""The coordinator's metrics as task events are folded (real SQLite file, real prometheus_client)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from common.event_kinds import EventKind
from common.events import TaskEvent, TaskFailed, TaskStarted, TaskSucceeded
from common.ids import new_id
from common.models import QueueDepth
from common.states import Priority, TaskState
from coordinator.event_folding import EventFolder
from coordinator.metrics import ClusterMetrics, GaugeValues
from coordinator.state_machine import transition
from coordinator.task_book import TaskBook
from storage.artifact_index import ArtifactIndex
from storage.database import Database
from storage.records import EventRecord, TaskRecord, WriteBatch
from storage.task_queries import TaskQueries
from storage.task_writer import TaskWriter

GUARD_KINDS = {TaskState.REJECTED: EventKind.DENIED, TaskState.WAITING_APPROVAL: EventKind.HELD}


class Harness:
    """The metrics listening to the commits of a task writer, as in the coordinator."""

    def __init__(self, db: Database) -> None:
        self.metrics = ClusterMetrics()
        self.store = TaskWriter(db)
        self.store.on_commit = self.metrics.on_commit
        self.book = TaskBook(TaskQueries(db, ArtifactIndex(db)))
        self.folder = EventFolder(self.book)

    async def admit(self, skill: str = "echo", *, state: TaskState = TaskState.PENDING) -> TaskRecord:
        """A task admitted at t=1 (held or denied by the guard, as `state` says) and, if not, queued at t=1.5."""
        record = TaskRecord(
            task_id=new_id(), skill=skill, priority=Priority.NORMAL, state=TaskState.PENDING, input="{}",
            max_attempts=3, timeout_s=10.0, created_at=1.0, updated_at=1.0,
        )  # fmt: skip
        batch = WriteBatch(new_tasks=[record])
        batch.events.append(EventRecord.of(EventKind.SUBMITTED, record.task_id, 1.0, to_state=TaskState.PENDING))
        if state in GUARD_KINDS:
            batch.events.append(transition(record, state, at=1.0, kind=GUARD_KINDS[state]))
        self.book.add(record)
        if state == TaskState.PENDING:
            record.queued_at = 1.5
            batch.events.append(self.book.move(record, TaskState.QUEUED, at=1.5, kind=EventKind.QUEUED))
        await self.store.write_batch(batch)
        return record

    async def fold(self, *events: TaskEvent) -> None:
        batch = WriteBatch()
        for event in events:
            await self.folder.fold(event, batch)
        await self.store.write_batch(batch)
        self.book.release_finished(list(batch.changed_tasks.values()))

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    db = await Database.open(tmp_path / "claw.db")
    try:
        yield Harness(db)
    finally:
        await db.close()


def started(task_id: str, attempt: int = 1, at: float = 2.0) -> TaskStarted:
    return TaskStarted(event_id=new_id(), task_id=task_id, attempt=attempt, node_id="n1", at=at)


def succeeded(task_id: str, attempt: int = 1, at: float = 3.0, started_at: float = 2.0) -> TaskSucceeded:
    return TaskSucceeded(
        event_id=new_id(), task_id=task_id, attempt=attempt, node_id="n1", at=at, result=msgspec.Raw(b"{}"),
        started_at=started_at,
    )  # fmt: skip


def failed(task_id: str, attempt: int = 1, at: float = 3.0, retry_in_s: float | None = None) -> TaskFailed:
    return TaskFailed(
        event_id=new_id(), task_id=task_id, attempt=attempt, node_id="n1", at=at, error_type="E", message="m",
        started_at=at - 1.0, retry_in_s=retry_in_s,
    )  # fmt: skip


async def test_counters_follow_outcomes_by_skill(h: Harness) -> None:
    ok = await h.admit("echo")
    bad = await h.admit("fail")
    await h.fold(started(ok.task_id), succeeded(ok.task_id))
    await h.fold(started(bad.task_id), failed(bad.task_id))
    assert h.value("claw_tasks_submitted_total", skill="echo") == 1
    assert h.value("claw_tasks_submitted_total", skill="fail") == 1
    assert h.value("claw_tasks_succeeded_total", skill="echo") == 1
    assert h.value("claw_tasks_dead_total", skill="fail") == 1
    assert h.value("claw_tasks_succeeded_total", skill="fail") is None  # never labelled: no sample


async def test_run_time_and_queue_wait_are_observed_once_per_task(h: Harness) -> None:
    record = await h.admit("echo")
    await h.fold(started(record.task_id, at=2.0), succeeded(record.task_id, at=3.5))
    assert h.value("claw_task_queue_wait_seconds_count", skill="echo") == 1
    assert h.value("claw_task_queue_wait_seconds_sum", skill="echo") == pytest.approx(0.5)  # queued 1.5, started 2
    assert h.value("claw_task_run_seconds_count", skill="echo") == 1
    assert h.value("claw_task_run_seconds_sum", skill="echo") == pytest.approx(1.5)
    assert h.value("claw_task_run_seconds_bucket", skill="echo", le="2.5") == 1
    assert h.value("claw_task_run_seconds_bucket", skill="echo", le="1.0") == 0


async def test_a_retried_task_counts_its_retry_and_waits_in_the_queue_once(h: Harness) -> None:
    record = await h.admit("flaky")
    await h.fold(started(record.task_id, at=2.0), failed(record.task_id, at=3.0, retry_in_s=1.0))
    await h.fold(started(record.task_id, attempt=2, at=4.0), succeeded(record.task_id, attempt=2, at=5.0))
    assert h.value("claw_task_retries_total", skill="flaky") == 1
    assert h.value("claw_task_queue_wait_seconds_count", skill="flaky") == 1
    # Run time spans the series, first start to end, as `claw task show` and `claw status` report it.
    assert h.value("claw_task_run_seconds_sum", skill="flaky") == pytest.approx(3.0)
    assert h.value("claw_tasks_succeeded_total", skill="flaky") == 1


async def test_a_task_denied_at_admission_counts_as_submitted_and_rejected(h: Harness) -> None:
    await h.admit("http.request", state=TaskState.REJECTED)
    await h.admit("http.request", state=TaskState.WAITING_APPROVAL)
    assert h.value("claw_tasks_submitted_total", skill="http.request") == 2
    assert h.value("claw_tasks_rejected_total", skill="http.request") == 1


def test_two_coordinators_in_one_process_keep_separate_metrics() -> None:
    first, second = ClusterMetrics(), ClusterMetrics()
    record = TaskRecord(
        task_id=new_id(), skill="echo", priority=Priority.NORMAL, state=TaskState.PENDING, input="{}",
        max_attempts=1, timeout_s=1.0, created_at=1.0, updated_at=1.0,
    )  # fmt: skip
    first.observe_transition(record, None, TaskState.PENDING, 1.0)
    assert first.registry.get_sample_value("claw_tasks_submitted_total", {"skill": "echo"}) == 1
    assert second.registry.get_sample_value("claw_tasks_submitted_total", {"skill": "echo"}) is None


def test_gauges_take_the_values_read_on_the_event_loop() -> None:
    metrics = ClusterMetrics()
    metrics.set_gauges(
        GaugeValues(
            tasks_by_state={"running": 2, "succeeded": 7},
            nodes_online=3,
            alerts={"failure_rate": True, "completion_rate": False},
            updated_at=1234.0,
            queues=[QueueDepth(skill="echo", priority=Priority.HIGH, pending=5, ack_pending=1)],
            dead_letters=4,
        )
    )
    sample = metrics.registry.get_sample_value
    assert sample("claw_tasks", {"state": "succeeded"}) == 7
    assert sample("claw_tasks", {"state": "dead"}) == 0  # every state has a sample
    assert sample("claw_tasks_running") == 2
    assert sample("claw_nodes_online") == 3
    assert sample("claw_queue_depth", {"skill": "echo", "priority": "high"}) == 5
    assert sample("claw_queue_ack_pending", {"skill": "echo", "priority": "high"}) == 1
    assert sample("claw_dlq_messages") == 4
    assert sample("claw_alert_active", {"alert": "failure_rate"}) == 1
    assert sample("claw_alert_active", {"alert": "completion_rate"}) == 0
    assert sample("claw_gauges_updated_timestamp_seconds") == 1234.0
    # JetStream unreadable: its gauges and their timestamp keep the last values.
    metrics.set_gauges(GaugeValues(tasks_by_state={}, nodes_online=0, alerts={}))
    assert sample("claw_dlq_messages") == 4
    assert sample("claw_gauges_updated_timestamp_seconds") == 1234.0
