"""Operator actions on tasks and the recovery work the coordinator does on its own.

- `cancel`: the task ends `cancelled` at once; its message is deleted from the queue and a
  `<prefix>.cancel.<task_id>` broadcast stops a running attempt on its worker.
- `rerun`: a failed, dead or cancelled task starts a new attempt series (`claw task retry`, DLQ
  replay); attempt numbers continue, and a second call while the re-run is under way changes nothing.
- `reclaim_node`: a node declared offline had tasks running; they are NAKed on their delivery's reply
  subject, so JetStream redelivers them at once instead of after the ack wait, and their attempts are
  recorded `lost` and fenced (a late report from a frozen worker that wakes up is ignored).
- `recover_lost_messages`: JetStream accepts stale acks (JETSTREAM.md), so a zombie can delete a
  message that was meant to come back (a retry or a reclaimed task). Tasks that should have restarted
  by now are checked against the stream; a missing message is published again.
"""

from __future__ import annotations

from nats.js.errors import NotFoundError

from common.clock import Clock
from common.config import ClawConfig
from common.errors import InvalidInputError, TaskNotFoundError
from common.event_kinds import EventKind
from common.log import get_logger
from common.models import CancelNotice
from common.states import TERMINAL_STATES, TaskState
from communication.codec import encode
from communication.connection import NATS_ERRORS, NatsConnection
from coordinator.delivery_claims import ClaimBook
from coordinator.event_folding import EventFolder
from coordinator.submission import SubmitPipeline
from coordinator.task_book import TaskBook
from storage.records import TaskRecord, WriteBatch
from storage.task_writer import TaskWriter

log = get_logger("coordinator.operations")

RERUNNABLE = frozenset({TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED, TaskState.NEEDS_INPUT})


class NotDeadError(InvalidInputError):
    """A DLQ replay of a task that is not dead (its letter is not one the coordinator wrote); `state` is
    the task's state, None for an unknown task."""

    def __init__(self, message: str, state: TaskState | None) -> None:
        super().__init__(message)
        self.state = state


RECHECK_EVERY_S = 30.0


class TaskOperations:
    """Cancel, re-run, reclaim and recover."""

    def __init__(
        self,
        conn: NatsConnection,
        book: TaskBook,
        writer: TaskWriter,
        pipeline: SubmitPipeline,
        folder: EventFolder,
        clock: Clock,
        config: ClawConfig,
        claims: ClaimBook | None = None,
    ) -> None:
        self._claims = claims
        self._conn = conn
        self._book = book
        self._writer = writer
        self._pipeline = pipeline
        self._folder = folder
        self._clock = clock
        self._config = config
        self._checked_at: dict[str, float] = {}

    async def cancel(self, task_id: str, *, reason: str, by: str | None) -> TaskState:
        """Cancel a task that has not finished; returns its new state."""
        # A task published a moment ago may still wait for its `queued` to be written: write it
        # first, so the timeline shows it was queued and its message is known (to withdraw it).
        await self._pipeline.flush_queued()
        async with self._book.lock:
            record = await self._book.find(task_id)
            if record is None:
                raise TaskNotFoundError(f"no task with id {task_id}; `claw task list` shows recent ones")
            if record.state in TERMINAL_STATES and record.state != TaskState.NEEDS_INPUT:
                raise InvalidInputError(f"task {task_id} already {record.state.value}; there is nothing to cancel")
            now = self._clock.now()
            batch = WriteBatch()
            batch.events.append(
                self._book.move(
                    record, TaskState.CANCELLED, at=now, kind=EventKind.CANCELLED, data={"reason": reason, "by": by}
                )
            )
            record.finished_at = now
            record.next_attempt_at = None
            batch.touch(record)
            await self._writer.write_batch(batch)
            self._book.release_finished([record])
        await self.broadcast_cancel(record, reason)
        if record.stream_seq is not None:
            await self._pipeline.withdraw(record.stream_seq)
        log.info("task.cancelled", task_id=task_id, by=by, reason=reason)
        return record.state

    async def broadcast_cancel(self, record: TaskRecord, reason: str) -> None:
        """Tell every worker to stop (or never start) this series of the task."""
        notice = CancelNotice(reason=reason, series=record.attempt_offset)
        await self._conn.nc.publish(self._conn.subjects.cancel(record.task_id), encode(notice))

    async def rerun(
        self, task_id: str, *, kind: EventKind, by: str | None, note: dict[str, object], only_dead: bool = False
    ) -> tuple[TaskState, bool]:
        """Start a new attempt series; returns (state, whether this call started it).

        `only_dead` (a DLQ replay): a task that is re-runnable but not dead raises NotDeadError, and so
        does an unknown task.
        """
        async with self._book.lock:
            record = await self._book.find(task_id)
            if record is None:
                if only_dead:
                    raise NotDeadError(f"no task with id {task_id}: its dead letter was not replayed", None)
                raise TaskNotFoundError(f"no task with id {task_id}; `claw task list` shows recent ones")
            if only_dead and record.state in RERUNNABLE and record.state is not TaskState.DEAD:
                raise NotDeadError(
                    f"task {task_id} is {record.state.value}, not dead: its dead letter is not the coordinator's "
                    f"and was dropped, not replayed (`claw task retry {task_id}` re-runs it)",
                    record.state,
                )
            if record.state not in RERUNNABLE:
                if kind == EventKind.REPLAYED:
                    return record.state, False  # replayed already: running it twice changes nothing
                raise InvalidInputError(
                    f"task {task_id} is {record.state.value}; only failed, dead or cancelled tasks can be re-run"
                )
            self._book.adopt(record)
            # The series number (attempt offset) names the message id and what workers remember as
            # cancelled, so it must differ from the last one even when no attempt ran in it (a task
            # cancelled while queued): attempt numbers then skip the one that never ran.
            record.attempt_offset = max(record.attempts, record.attempt_offset + 1)
            record.attempts = record.attempt_offset
            record.fenced_through = record.attempts
            record.finished_at = record.next_attempt_at = record.result = None
            record.error_type = record.error_message = record.error_traceback = None
            batch = WriteBatch()
            batch.events.append(
                self._book.move(record, TaskState.PENDING, at=self._clock.now(), kind=kind, data={"by": by, **note})
            )
            batch.touch(record)
            await self._writer.write_batch(batch)
        await self._pipeline.publish_pending([record])
        log.info("task.rerun", task_id=task_id, kind=kind, by=by, series_from_attempt=record.attempt_offset + 1)
        return record.state, True

    async def reclaim_node(self, node_id: str) -> int:
        """NAK the in-flight tasks of a node that went offline; returns how many.

        Those it reported `started` carry their ack subject; those it started moments before it died
        (a `started` is deferred) are known from its delivery claims.
        """
        claims = {(c.task_id, c.attempt): c for c in self._claims.take(node_id)} if self._claims else {}
        reason = f"node {node_id} went offline"
        async with self._book.lock:
            now = self._clock.now()
            batch = WriteBatch()
            naks: list[tuple[TaskRecord, str | None]] = []
            for record in self._book.running_on(node_id):
                claim = claims.pop((record.task_id, record.attempts), None)
                naks.append((record, record.ack_subject or (claim.ack_subject if claim else None)))
                self._folder.lose_attempt(record, batch, at=now, reason=reason)
            for claim in claims.values():
                queued = self._book.get(claim.task_id)
                # Still `queued` here, with an older attempt count: its `started` never came. Anything
                # else (finished, retrying, running elsewhere) must not be NAKed: acks match by sequence.
                if queued is None or queued.state != TaskState.QUEUED or queued.attempts >= claim.attempt:
                    continue
                self._folder.lose_unreported_attempt(queued, claim.attempt, node_id, batch, at=now, reason=reason)
                naks.append((queued, claim.ack_subject))
            if not naks:
                return 0
            await self._writer.write_batch(batch)
        for record, ack_subject in naks:
            if ack_subject:
                await self._conn.nc.publish(ack_subject, b"-NAK")
            else:
                log.warning("reclaim.no_ack_subject", task_id=record.task_id, note="redelivered after the ack wait")
        for skill, priority in {(r.skill, r.priority.value) for r, _ in naks}:
            await self._conn.nc.publish(self._conn.subjects.wake(skill), priority.encode())
        log.warning("node.reclaimed", node_id=node_id, tasks=len(naks))
        return len(naks)

    async def recover_lost_messages(self) -> int:
        """Publish again the waiting tasks whose message is missing from the queue; returns how many."""
        now = self._clock.now()
        grace_s = self._config.jetstream.ack_wait_s + 5 * self._config.worker.idle_poll_interval_s + 5.0
        reposted = 0
        for record in self._overdue(now, grace_s):
            self._checked_at[record.task_id] = now
            if record.stream_seq is None or await self._message_exists(record.stream_seq):
                continue
            if record.state in (TaskState.QUEUED, TaskState.RETRYING):
                reposted += await self._pipeline.repost(record, "its message was gone from the queue")
        for task_id in [t for t in self._checked_at if self._book.get(t) is None]:
            del self._checked_at[task_id]
        return reposted

    def _overdue(self, now: float, grace_s: float) -> list[TaskRecord]:
        """Waiting tasks that were delivered before and should have started again by now."""
        overdue = []
        for record in self._book.with_state(TaskState.RETRYING) + self._book.with_state(TaskState.QUEUED):
            if record.attempts == 0:
                continue  # never delivered: it is simply waiting for a worker
            due = (record.next_attempt_at or record.updated_at) + grace_s
            if now >= due and now - self._checked_at.get(record.task_id, 0.0) >= RECHECK_EVERY_S:
                overdue.append(record)
        return overdue

    async def _message_exists(self, seq: int) -> bool:
        try:
            await self._conn.js.get_msg(self._conn.subjects.tasks_stream, seq)
            return True
        except NotFoundError:
            return False
        except NATS_ERRORS as exc:
            log.warning("recover.check_failed", stream_seq=seq, error=str(exc))
            return True  # unknown: do not act on a guess
