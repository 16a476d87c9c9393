"""Folding worker events into task state: the rules, without I/O beyond record look-ups.

Events arrive at least once and, across redeliveries, possibly out of order, so every rule is
idempotent and fenced by attempt:

- an event for an attempt older than the task's current one, or for a finished task, changes nothing
  (it is logged as `ignored` so the audit trail shows the zombie);
- `started` for a newer attempt while the task still runs an older one means the older attempt was
  lost (its worker died or froze): it is recorded `lost` and the task moves on;
- an outcome whose `started` was not seen (lost or still in flight) implies it: the task passes
  through `running` first, so the event log stays a legal sequence.
"""

from __future__ import annotations

import msgspec

from common.events import TaskEvent, TaskFailed, TaskLog, TaskProgress, TaskStarted, TaskSucceeded
from common.log import get_logger
from common.states import TERMINAL_STATES, AttemptState, TaskState
from coordinator.task_book import TaskBook
from storage.records import AttemptRecord, EventRecord, TaskRecord, WriteBatch

log = get_logger("coordinator.folding")
_json = msgspec.json.Encoder()


def _data(**fields: object) -> str:
    return _json.encode({k: v for k, v in fields.items() if v is not None}).decode()


class EventFolder:
    """Applies decoded task events to the working set and stages the rows to write."""

    def __init__(self, book: TaskBook) -> None:
        self._book = book

    async def fold(self, event: TaskEvent, batch: WriteBatch) -> None:
        """Apply one event; its effects are staged in `batch`."""
        record = await self._book.find(event.task_id)
        if record is None:
            log.warning("event.unknown_task", task_id=event.task_id, kind=type(event).__name__)
            return
        stale = self._stale_reason(event, record)
        if stale:
            self._ignore(event, record, batch, stale)
            return
        match event:
            case TaskStarted():
                self._start(record, event, batch, started_at=event.at)
            case TaskSucceeded():
                self._finish_succeeded(record, event, batch)
            case TaskFailed():
                self._finish_failed(record, event, batch)
            case TaskProgress():
                batch.events.append(self._note(event, "progress", _data(percent=event.percent, message=event.message)))
            case TaskLog():
                batch.events.append(self._note(event, "log", _data(level=event.level, message=event.message)))

    @staticmethod
    def _stale_reason(event: TaskEvent, record: TaskRecord) -> str | None:
        if record.state in TERMINAL_STATES and not isinstance(event, TaskProgress | TaskLog):
            return f"task already {record.state.value}"
        if event.attempt < record.attempts:
            return f"attempt {event.attempt} superseded by attempt {record.attempts}"
        return None

    def _start(self, record: TaskRecord, event: TaskEvent, batch: WriteBatch, *, started_at: float) -> None:
        """Make `event.attempt` the running attempt (idempotent for a repeated `started`)."""
        if record.state == TaskState.RUNNING and record.attempts == event.attempt:
            return
        if record.state == TaskState.RUNNING:
            self._lose_current_attempt(record, event, batch)
        if record.state == TaskState.PENDING:
            # The worker was faster than our own "published" bookkeeping.
            batch.events.append(self._book.move(record, TaskState.QUEUED, at=event.at, kind="queued"))
            record.queued_at = record.queued_at or event.at
        record.attempts = event.attempt
        record.node_id = event.node_id
        record.started_at = record.started_at or started_at
        kind = "started" if isinstance(event, TaskStarted) else "started (implied)"
        batch.events.append(
            self._book.move(
                record,
                TaskState.RUNNING,
                at=started_at,
                kind=kind,
                node_id=event.node_id,
                event_id=event.event_id if isinstance(event, TaskStarted) else None,
            )
        )
        batch.put_attempt(
            AttemptRecord(record.task_id, event.attempt, event.node_id, AttemptState.RUNNING, started_at=started_at)
        )
        batch.touch(record)

    def _lose_current_attempt(self, record: TaskRecord, event: TaskEvent, batch: WriteBatch) -> None:
        lost = record.attempts
        batch.put_attempt(
            AttemptRecord(
                record.task_id,
                lost,
                record.node_id,
                AttemptState.LOST,
                finished_at=event.at,
                error_type="AttemptLost",
                error_message=f"attempt {lost} on {record.node_id} stopped reporting; {event.attempt} took over",
            )
        )
        batch.events.append(
            self._book.move(record, TaskState.QUEUED, at=event.at, kind="lost", attempt=lost, node_id=record.node_id)
        )
        log.warning("task.attempt_lost", task_id=record.task_id, attempt=lost, node_id=record.node_id)

    def _finish_succeeded(self, record: TaskRecord, event: TaskSucceeded, batch: WriteBatch) -> None:
        self._ensure_running(record, event, batch, event.started_at)
        record.result = bytes(event.result).decode()
        record.finished_at = event.at
        record.error_type = record.error_message = record.error_traceback = None
        batch.events.append(
            self._book.move(
                record,
                TaskState.SUCCEEDED,
                at=event.at,
                kind="succeeded",
                node_id=event.node_id,
                event_id=event.event_id,
            )
        )
        batch.put_attempt(
            AttemptRecord(
                record.task_id,
                event.attempt,
                event.node_id,
                AttemptState.SUCCEEDED,
                started_at=event.started_at,
                finished_at=event.at,
            )
        )
        batch.touch(record)

    def _finish_failed(self, record: TaskRecord, event: TaskFailed, batch: WriteBatch) -> None:
        self._ensure_running(record, event, batch, event.started_at or event.at)
        record.finished_at = event.at
        record.error_type = event.error_type
        record.error_message = event.message
        record.error_traceback = event.traceback
        batch.events.append(
            self._book.move(
                record,
                TaskState.FAILED,
                at=event.at,
                kind="failed",
                node_id=event.node_id,
                event_id=event.event_id,
                data=_data(error_type=event.error_type, message=event.message),
            )
        )
        batch.put_attempt(
            AttemptRecord(
                record.task_id,
                event.attempt,
                event.node_id,
                AttemptState.FAILED,
                started_at=event.started_at or None,
                finished_at=event.at,
                error_type=event.error_type,
                error_message=event.message,
                error_traceback=event.traceback,
            )
        )
        batch.touch(record)

    def _ensure_running(self, record: TaskRecord, event: TaskEvent, batch: WriteBatch, started_at: float) -> None:
        """An outcome whose `started` we did not see: pass through `running` first."""
        if record.state != TaskState.RUNNING or record.attempts != event.attempt:
            self._start(record, event, batch, started_at=started_at)

    @staticmethod
    def _note(event: TaskEvent, kind: str, data: str) -> EventRecord:
        return EventRecord(
            task_id=event.task_id,
            kind=kind,
            at=event.at,
            attempt=event.attempt,
            event_id=event.event_id,
            node_id=event.node_id,
            data=data,
        )

    @staticmethod
    def _ignore(event: TaskEvent, record: TaskRecord, batch: WriteBatch, reason: str) -> None:
        kind = type(event).__name__.removeprefix("Task").lower()
        log.info("event.ignored", task_id=record.task_id, attempt=event.attempt, kind=kind, reason=reason)
        batch.events.append(
            EventRecord(
                task_id=event.task_id,
                kind=f"{kind} (ignored)",
                at=event.at,
                attempt=event.attempt,
                event_id=event.event_id,
                node_id=event.node_id,
                data=_data(ignored=reason),
            )
        )
