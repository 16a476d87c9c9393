"""Folding worker events into task state: the rules, without I/O beyond record look-ups.

Events arrive at least once and, across redeliveries, possibly out of order, so every rule is
idempotent and fenced by attempt:

- an event for an attempt older than the task's current one, for an attempt declared lost
  (`fenced_through`), or an outcome for a finished task, changes nothing (it is logged as
  `<kind> (ignored)` so the audit trail shows the zombie);
- `started` for a newer attempt while the task still runs an older one means the older attempt was
  lost (its worker died or froze): it is recorded `lost` and the task moves on;
- an outcome whose `started` was not seen (lost or still in flight) implies it: the task passes
  through `running` first, so the event log stays a legal sequence;
- a failure with `retry_in_s` makes the task `retrying` until its next attempt starts; a final one
  makes it `dead` (and dead-lettered after the commit) or, with dead-lettering off, `failed`.

An event that fits none of these (its task does not exist, or it would need a transition the table
forbids, as a `succeeded` for a task waiting for approval does) raises `BadEventError` and changes
nothing: a fold is all or nothing, so the caller can quarantine the event and go on.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from common.errors import BadEventError, ForgedEventError, IllegalTransitionError
from common.event_kinds import EventKind
from common.events import (
    TaskArtifact,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskLog,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    TaskUsage,
    TaskVerifying,
)
from common.flow import FailureReason, failure_reason
from common.ids import shown_id
from common.log import get_logger
from common.models import ARTIFACT_MARKER, ArtifactRef
from common.states import TERMINAL_STATES, AttemptState, TaskState
from coordinator.task_book import TaskBook
from storage.records import AttemptRecord, EventRecord, TaskRecord, WriteBatch

log = get_logger("coordinator.folding")
_json = msgspec.json.Encoder()


def artifact_marker(ref: ArtifactRef) -> str:
    """How an input or result kept as an artifact is stored in the task's JSON."""
    return _json.encode({ARTIFACT_MARKER: ref}).decode()


class EventFolder:
    """Applies decoded task events to the working set and stages the rows to write."""

    def __init__(self, book: TaskBook, *, dead_letter: bool = True) -> None:
        self._book = book
        self._dead_letter = dead_letter
        # Flow control's escalation (coordinator/flow/): for a final failure, the reason a person
        # must fix it (the task goes to `needs_input` instead of `dead`), else None.
        self.escalate: Callable[[TaskRecord, TaskFailed], str | None] | None = None

    async def fold(self, event: TaskEvent, batch: WriteBatch) -> None:
        """Apply one event; its effects are staged in `batch`.

        All or nothing: if the event cannot apply (`BadEventError`), or applying it fails half way
        (a bug), the task's record, the state counts and `batch` are left as they were.
        """
        record = await self._book.find(event.task_id)
        if record is None:
            raise BadEventError(f"there is no task {shown_id(event.task_id)}")
        _check_holder(event, record)
        before = self._book.snapshot(record)
        staged = WriteBatch()
        try:
            self._apply(event, record, staged)
        except Exception as exc:
            self._book.restore(record, before)
            if isinstance(exc, IllegalTransitionError):
                kind = type(event).__name__.removeprefix("Task").lower()
                raise BadEventError(
                    f"a {kind} event for attempt {event.attempt} does not apply to a task that is "
                    f"{record.state.value}: {exc}"
                ) from None
            raise
        batch.absorb(staged)

    def _apply(self, event: TaskEvent, record: TaskRecord, batch: WriteBatch) -> None:
        if isinstance(event, TaskProgress | TaskLog | TaskVerifying | TaskUsage):
            batch.events.append(self._note(event))
            return
        if isinstance(event, TaskArtifact):
            self._artifact(event, batch)
            return
        stale = self._stale_reason(event, record)
        if stale:
            self._ignore(event, record, batch, stale)
            if isinstance(event, TaskStarted) and record.state == TaskState.CANCELLED:
                batch.recancel.append(record)
            if isinstance(event, TaskSucceeded | TaskFailed) and record.state == TaskState.CANCELLED:
                self._ran_despite_cancel(record, event, batch)
            return
        match event:
            case TaskStarted():
                self._start(record, event, batch, started_at=event.at)
            case TaskSucceeded():
                self._succeed(record, event, batch)
            case TaskFailed():
                self._fail(record, event, batch)
            case TaskCancelled():
                self._cancelled(record, event, batch)

    def _stale_reason(self, event: TaskEvent, record: TaskRecord) -> str | None:
        if event.attempt <= record.fenced_through:
            return f"attempt {event.attempt} was declared lost"
        if isinstance(event, TaskCancelled) and record.state == TaskState.CANCELLED:
            return None  # the running attempt confirming a cancel: recorded below
        if record.state in TERMINAL_STATES:
            if isinstance(event, TaskFailed) and record.state == TaskState.DEAD and event.attempt == record.attempts:
                return None  # a redelivered final failure: publish the dead letter again (idempotent)
            return f"task already {record.state.value}"
        if event.attempt < record.attempts:
            return f"attempt {event.attempt} superseded by attempt {record.attempts}"
        if record.state == TaskState.RETRYING and event.attempt == record.attempts:
            return f"attempt {event.attempt} already ended; the task is waiting to retry"
        return None

    def _start(self, record: TaskRecord, event: TaskEvent, batch: WriteBatch, *, started_at: float) -> None:
        """Make `event.attempt` the running attempt (idempotent for a repeated `started`)."""
        if record.state == TaskState.RUNNING and record.attempts == event.attempt:
            if isinstance(event, TaskStarted) and event.ack_subject:
                record.ack_subject = event.ack_subject
            return
        if record.state == TaskState.RUNNING:
            self.lose_attempt(record, batch, at=event.at, reason=f"attempt {event.attempt} took over")
        if record.state == TaskState.PENDING:
            # The worker was faster than our own "published" bookkeeping. An outcome's `at` is
            # when the attempt ended: the task was queued no later than it started.
            batch.events.append(self._book.move(record, TaskState.QUEUED, at=started_at, kind=EventKind.QUEUED))
            record.queued_at = record.queued_at or started_at
        record.attempts = event.attempt
        record.node_id = event.node_id
        record.started_at = record.started_at or started_at
        record.next_attempt_at = None
        ack_subject = event.ack_subject if isinstance(event, TaskStarted) else None
        record.ack_subject = ack_subject
        # An outcome without its `started`: a short attempt (the worker skips it on purpose), or
        # a lost event (then the timeline says so).
        deliberate = isinstance(event, TaskStarted) or not getattr(event, "start_sent", True)
        kind = EventKind.STARTED if deliberate else EventKind.STARTED_IMPLIED
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
            AttemptRecord(
                record.task_id,
                event.attempt,
                event.node_id,
                AttemptState.RUNNING,
                started_at=started_at,
                ack_subject=ack_subject,
            )
        )
        batch.touch(record)

    def lose_attempt(self, record: TaskRecord, batch: WriteBatch, *, at: float, reason: str) -> None:
        """The running attempt stopped reporting: record it `lost`, fence it, queue the task again."""
        lost, node_id = record.attempts, record.node_id
        self._record_lost(record, lost, node_id, batch, at=at, message=f"stopped reporting; {reason}", reason=reason)
        record.ack_subject = None
        batch.events.append(
            self._book.move(
                record,
                TaskState.QUEUED,
                at=at,
                kind=EventKind.LOST,
                attempt=lost,
                node_id=node_id,
                data={"reason": reason},
            )
        )

    def lose_unreported_attempt(
        self, record: TaskRecord, attempt: int, node_id: str, batch: WriteBatch, *, at: float, reason: str
    ) -> None:
        """A queued task's attempt that its node claimed but never reported: record it `lost`, fence it.

        The task stays `queued`: its message goes back to the queue, and the next attempt starts it.
        """
        record.attempts = attempt
        record.node_id = node_id
        message = f"started moments before it stopped reporting; {reason}"
        self._record_lost(record, attempt, node_id, batch, at=at, message=message, reason=reason)
        batch.events.append(
            EventRecord.of(
                EventKind.LOST, record.task_id, at, attempt=attempt, node_id=node_id, data={"reason": reason}
            )
        )

    @staticmethod
    def _record_lost(
        record: TaskRecord,
        attempt: int,
        node_id: str | None,
        batch: WriteBatch,
        *,
        at: float,
        message: str,
        reason: str,
    ) -> None:
        """The attempt row of a lost attempt, and the fence that keeps its late reports out."""
        batch.put_attempt(
            AttemptRecord(
                record.task_id, attempt, node_id, AttemptState.LOST, finished_at=at,
                error_type="AttemptLost", error_message=f"attempt {attempt} on {node_id} {message}",
            )
        )  # fmt: skip
        record.fenced_through = max(record.fenced_through, attempt)
        batch.touch(record)
        log.warning("task.attempt_lost", task_id=record.task_id, attempt=attempt, node_id=node_id, reason=reason)

    def _succeed(self, record: TaskRecord, event: TaskSucceeded, batch: WriteBatch) -> None:
        self._ensure_running(record, event, batch, event.started_at)
        if event.result_ref is not None:
            record.result = artifact_marker(event.result_ref)
        else:
            try:
                record.result = bytes(event.result).decode()
            except UnicodeDecodeError as exc:
                raise BadEventError(f"the result is not valid UTF-8 (byte {exc.start})") from None
        record.finished_at = event.at
        record.error_type = record.error_message = record.error_traceback = None
        record.ack_subject = None
        batch.events.append(
            self._book.move(
                record,
                TaskState.SUCCEEDED,
                at=event.at,
                kind=EventKind.SUCCEEDED,
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

    def _fail(self, record: TaskRecord, event: TaskFailed, batch: WriteBatch) -> None:
        if record.state == TaskState.DEAD:
            batch.dead_letters.append(record)  # redelivered: the dead letter may not have gone out
            return
        self._ensure_running(record, event, batch, event.started_at or event.at)
        record.error_type = event.error_type
        record.error_message = event.message
        record.error_traceback = event.traceback
        record.ack_subject = None
        data = {"error_type": event.error_type, "message": event.message, "retry_in_s": event.retry_in_s}
        if event.retry_in_s is not None:
            record.next_attempt_at = event.at + event.retry_in_s
            to_state, kind = TaskState.RETRYING, EventKind.RETRYING
        else:
            record.finished_at = event.at
            record.next_attempt_at = None
            to_state = TaskState.DEAD if self._dead_letter else TaskState.FAILED
            kind = EventKind.DEAD if self._dead_letter else EventKind.FAILED
            reason = self.escalate(record, event) if self.escalate is not None else None
            if reason is not None:
                to_state, kind = TaskState.NEEDS_INPUT, EventKind.NEEDS_INPUT
                data["reason"] = reason
        batch.events.append(
            self._book.move(
                record, to_state, at=event.at, kind=kind, node_id=event.node_id, event_id=event.event_id, data=data
            )
        )
        batch.put_attempt(
            AttemptRecord(
                record.task_id,
                event.attempt,
                event.node_id,
                _failed_state(event),
                started_at=event.started_at or None,
                finished_at=event.at,
                error_type=event.error_type,
                error_message=event.message,
                error_traceback=event.traceback,
            )
        )
        batch.touch(record)
        if to_state == TaskState.DEAD:
            batch.dead_letters.append(record)

    @staticmethod
    def _artifact(event: TaskArtifact, batch: WriteBatch) -> None:
        """Record an artifact's metadata row (its bytes are already in the store)."""
        ref = event.ref
        batch.artifacts.append(
            (event.task_id, event.attempt, ref.name, ref.size, ref.sha256, ref.content_type, ref.backend, ref.key,
             event.at, event.expires_at)
        )  # fmt: skip
        batch.events.append(
            EventRecord.of(
                EventKind.ARTIFACT,
                event.task_id,
                event.at,
                attempt=event.attempt,
                event_id=event.event_id,
                node_id=event.node_id,
                data={"name": ref.name, "size": ref.size, "sha256": ref.sha256},
            )
        )

    def _cancelled(self, record: TaskRecord, event: TaskCancelled, batch: WriteBatch) -> None:
        """The worker stopped the attempt of a cancelled task."""
        if record.state != TaskState.CANCELLED:
            # Cancelled by something other than `claw task cancel` (cannot happen today): record it.
            self._ensure_running(record, event, batch, event.started_at or event.at)
            batch.events.append(
                self._book.move(
                    record, TaskState.CANCELLED, at=event.at, kind=EventKind.CANCELLED, node_id=event.node_id
                )
            )
            record.finished_at = event.at
        self._record_attempt_of_cancelled(record, event, batch, AttemptState.CANCELLED)
        batch.events.append(
            EventRecord.of(
                EventKind.ATTEMPT_CANCELLED,
                record.task_id,
                event.at,
                attempt=event.attempt,
                event_id=event.event_id,
                node_id=event.node_id,
            )
        )

    @staticmethod
    def _ran_despite_cancel(record: TaskRecord, event: TaskSucceeded | TaskFailed, batch: WriteBatch) -> None:
        """An attempt a worker had already started, and finished, before the cancel reached it.

        The task stays cancelled (its outcome is ignored), but the attempt ran and its side effects
        happened: it is recorded with how it ended, so `claw task show` does not claim it never ran.
        """
        if event.attempt < record.attempts:
            return  # an older attempt, superseded before the cancel
        state = _failed_state(event) if isinstance(event, TaskFailed) else AttemptState.SUCCEEDED
        EventFolder._record_attempt_of_cancelled(record, event, batch, state)

    @staticmethod
    def _record_attempt_of_cancelled(
        record: TaskRecord, event: TaskSucceeded | TaskFailed | TaskCancelled, batch: WriteBatch, state: AttemptState
    ) -> None:
        """Record how an attempt of a cancelled task ended, counting it if the cancel overtook its `started`."""
        if event.attempt > record.attempts:
            record.attempts = event.attempt
            record.node_id = event.node_id
        batch.touch(record)
        failed = event if isinstance(event, TaskFailed) else None
        batch.put_attempt(
            AttemptRecord(
                record.task_id,
                event.attempt,
                event.node_id,
                state,
                started_at=event.started_at or None,
                finished_at=event.at,
                error_type=None if failed is None else failed.error_type,
                error_message=None if failed is None else failed.message,
            )
        )

    def _ensure_running(self, record: TaskRecord, event: TaskEvent, batch: WriteBatch, started_at: float) -> None:
        """An outcome whose `started` we did not see: pass through `running` first."""
        if record.state != TaskState.RUNNING or record.attempts != event.attempt:
            self._start(record, event, batch, started_at=started_at)

    @staticmethod
    def _note(event: TaskProgress | TaskLog | TaskVerifying | TaskUsage) -> EventRecord:
        data: dict[str, object]
        if isinstance(event, TaskUsage):
            kind = EventKind.USAGE
            data = {"input_tokens": event.input_tokens, "output_tokens": event.output_tokens, "model": event.model,
                    "key": event.key, "cache_hit": event.cache_hit,
                    "call_started_at": event.call_started_at}  # fmt: skip
        elif isinstance(event, TaskProgress):
            kind, data = EventKind.PROGRESS, {"percent": event.percent, "message": event.message}
        elif isinstance(event, TaskVerifying):
            kind, data = EventKind.VERIFYING, {"check": event.check}
        else:
            kind, data = EventKind.LOG, {"level": event.level, "message": event.message}
        return EventRecord.of(
            kind,
            event.task_id,
            event.at,
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
            EventRecord.of(
                EventKind.ignored(kind),
                event.task_id,
                event.at,
                attempt=event.attempt,
                event_id=event.event_id,
                node_id=event.node_id,
                data={"ignored": reason},
            )
        )


def _check_holder(event: TaskEvent, record: TaskRecord) -> None:
    """Refuse an event about an attempt that another node holds.

    The node holding an attempt is known once it reported the attempt (its `started` event, or its
    first outcome) or claimed the delivery and was declared lost (`lose_unreported_attempt`): from then
    on only that node speaks for the attempt. The server binds the node id in the event's subject to
    the worker's credentials, and the intake checks the event says the same (docs/Security.md).
    """
    holder = record.node_id
    if holder is not None and event.attempt == record.attempts and event.node_id != holder:
        kind = type(event).__name__.removeprefix("Task").lower()
        raise ForgedEventError(
            f"a {kind} event from node {event.node_id} for attempt {event.attempt}, which node {holder} holds"
        )


def _failed_state(event: TaskFailed) -> AttemptState:
    """How a failed attempt is recorded: `rate_limited` when the API it called pushed back (a 429),
    which is the API's limit, not the task's fault (docs/Flow_control.md); else `failed`."""
    if failure_reason(event.error_type, event.message) == FailureReason.RATE_LIMIT:
        return AttemptState.RATE_LIMITED
    return AttemptState.FAILED
