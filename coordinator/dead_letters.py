"""The dead-letter queue: publishing dead tasks to `<PREFIX>_DLQ`, listing and purging it.

A task's dead letter carries its task message (input included) and every attempt's error type,
message and traceback, read from the database after the `dead` state was committed. It is published
with `Nats-Msg-Id` = `dlq:<task>:<series>`, so publishing it again (a redelivered final failure after
a coordinator crash) is deduplicated. Workers dead-letter undecodable (poison) messages themselves.
"""

from __future__ import annotations

from nats.js.errors import NotFoundError

from common.clock import Clock
from common.log import get_logger
from common.models import Backoff, DeadLetter, DeadLetterView
from communication.codec import DecodeError, decode, encode
from communication.connection import NATS_ERRORS, NatsConnection
from communication.publisher import JetStreamPublisher, Outgoing, PublishFailedError
from communication.subjects import skill_from_token
from coordinator.task_wire import task_message_of
from storage.records import TaskRecord
from storage.task_store import TaskStore

log = get_logger("coordinator.dlq")

SCAN_LIMIT = 100_000


class DeadLetterOffice:
    """Publishes, lists and purges dead letters."""

    def __init__(self, conn: NatsConnection, store: TaskStore, clock: Clock, default_backoff: Backoff) -> None:
        self._conn = conn
        self._store = store
        self._clock = clock
        self._default_backoff = default_backoff
        self._publisher = JetStreamPublisher(conn)

    async def publish(self, records: list[TaskRecord]) -> None:
        """Dead-letter tasks that ended `dead` (their final state is already committed)."""
        subjects = self._conn.subjects
        outgoing = []
        for record in records:
            letter = DeadLetter(
                kind="task",
                reason=f"{record.error_type}: {record.error_message}",
                dead_at=record.finished_at or self._clock.now(),
                skill=record.skill,
                subject=subjects.task(record.priority, record.skill),
                task_id=record.task_id,
                task=task_message_of(record, self._default_backoff),
                attempts=await self._store.attempt_history(record.task_id),
                stream_seq=record.stream_seq,
            )
            msg_id = f"dlq:{record.task_id}:{record.attempt_offset}"
            outgoing.append(Outgoing(subjects.dlq(record.skill), encode(letter), msg_id))
        for record, result in zip(records, await self._publisher.publish_many(outgoing), strict=True):
            if isinstance(result, PublishFailedError):
                # The task is `dead` in the database either way and can be re-run with `claw task retry`.
                log.error("dlq.publish_failed", task_id=record.task_id, error=str(result))
            else:
                log.info("dlq.dead_lettered", task_id=record.task_id, skill=record.skill)

    async def list_letters(self, *, skill: str | None, limit: int) -> list[DeadLetterView]:
        """Newest dead letters first, optionally of one skill."""
        stream = self._conn.subjects.dlq_stream
        info = await self._conn.js.stream_info(stream)
        views: list[DeadLetterView] = []
        seq = info.state.last_seq
        scanned = 0
        while seq >= max(info.state.first_seq, 1) and len(views) < limit and scanned < SCAN_LIMIT:
            view = await self._get(stream, seq)
            seq -= 1
            scanned += 1
            if view is not None and (skill is None or view.letter.skill == skill):
                views.append(view)
        return views

    async def find_task(self, task_id: str) -> DeadLetterView | None:
        """The newest dead letter of a task, if any."""
        stream = self._conn.subjects.dlq_stream
        info = await self._conn.js.stream_info(stream)
        seq = info.state.last_seq
        while seq >= max(info.state.first_seq, 1):
            view = await self._get(stream, seq)
            if view is not None and view.letter.task_id == task_id:
                return view
            seq -= 1
        return None

    async def purge(self, *, skill: str | None, older_than_s: float | None) -> int:
        """Remove dead letters (of one skill; older than a duration); returns how many went."""
        js, subjects = self._conn.js, self._conn.subjects
        stream = subjects.dlq_stream
        subject = subjects.dlq(skill) if skill else None
        before = (await js.stream_info(stream)).state.messages
        if older_than_s is None:
            await js.purge_stream(stream, subject=subject)
        else:
            first_kept = await self._first_seq_newer_than(stream, self._clock.now() - older_than_s)
            if first_kept is None:
                await js.purge_stream(stream, subject=subject)
            else:
                await js.purge_stream(stream, subject=subject, seq=first_kept)
        after = (await js.stream_info(stream)).state.messages
        return before - after

    async def _first_seq_newer_than(self, stream: str, cutoff: float) -> int | None:
        info = await self._conn.js.stream_info(stream)
        seq = max(info.state.first_seq, 1)
        while seq <= info.state.last_seq:
            view = await self._get(stream, seq)
            if view is not None and view.letter.dead_at >= cutoff:
                return seq
            seq += 1
        return None

    async def _get(self, stream: str, seq: int) -> DeadLetterView | None:
        try:
            msg = await self._conn.js.get_msg(stream, seq)
        except NotFoundError:
            return None  # deleted or purged
        except NATS_ERRORS as exc:
            log.warning("dlq.read_failed", seq=seq, error=str(exc))
            return None
        try:
            letter = decode(msg.data or b"", DeadLetter)
        except DecodeError:
            token = (msg.subject or "").rsplit(".", 1)[-1]
            letter = DeadLetter(
                kind="unreadable",
                reason="this DLQ entry could not be decoded",
                dead_at=0.0,
                skill=skill_from_token(token),
                subject=msg.subject or "",
            )
        return DeadLetterView(seq=seq, letter=letter)
