"""The dead-letter queue: publishing dead tasks to `<PREFIX>_DLQ`, listing, taking out and purging.

A task's dead letter carries its task message (input included) and every attempt's error type,
message, traceback and series, read from the database after the `dead` state was committed.

One letter per dead task: a task's letter is published on a subject of its own,
`<prefix>.dlq.<skill>.<task_id>`, so it can be found (last message of the subject) and replaced.
When a task leaves the DLQ - replayed, or re-run with `claw task retry` - its letter is deleted;
when it dies again, its new letter holds the attempts of every series. A letter published after a
re-run also purges any older letter of that task (left by a crash between the re-run and the
delete), so the stream's message count, which `claw status` and `claw_dlq_messages` report, is the
number of dead tasks (plus poison messages on `<prefix>.dlq.<skill>`, which workers report on their own
event subject and the coordinator checks and publishes: `coordinator/poison_reports.py`; no worker
may publish on the DLQ).

It is published with `Nats-Msg-Id` = `dlq:<task>:<series>`, so publishing it again (a redelivered
final failure after a coordinator crash) is deduplicated. A letter that would not fit one NATS
message is shortened (tracebacks, then the input, which the database still holds).
"""

from __future__ import annotations

from nats.js.errors import NotFoundError

from common.clock import Clock
from common.log import get_logger
from common.models import Backoff, DeadLetter, DeadLetterView
from communication.codec import DecodeError, decode, encode
from communication.connection import NATS_ERRORS, NatsConnection
from communication.payload_limits import reply_budget
from communication.publisher import JetStreamPublisher, Outgoing, PublishFailedError
from communication.subjects import skill_from_token
from coordinator.reply_fit import fit_dead_letter
from coordinator.task_wire import task_message_of
from storage.records import TaskRecord
from storage.task_queries import TaskQueries

log = get_logger("coordinator.dlq")

# Stream sequences one page of `dlq list` examines at most (gaps left by deleted letters cost a
# look-up each); a page that stops there still has a cursor to go on from.
SCAN_PER_PAGE = 5000
# Room a letter leaves in a reply for the view around it.
LETTER_VIEW_ROOM = 1024


class DeadLetterOffice:
    """Publishes, lists, takes out and purges dead letters."""

    def __init__(self, conn: NatsConnection, store: TaskQueries, clock: Clock, default_backoff: Backoff) -> None:
        self._conn = conn
        self._store = store
        self._clock = clock
        self._default_backoff = default_backoff
        self._publisher = JetStreamPublisher(conn)

    async def publish(self, records: list[TaskRecord]) -> None:
        """Dead-letter tasks that ended `dead` (their final state is already committed)."""
        subjects = self._conn.subjects
        budget = reply_budget(self._conn.nc.max_payload) - LETTER_VIEW_ROOM
        outgoing = []
        for record in records:
            attempts = await self._store.attempt_history(record.task_id)
            letter = DeadLetter(
                kind="task",
                reason=f"{record.error_type}: {record.error_message}",
                dead_at=record.finished_at or self._clock.now(),
                skill=record.skill,
                subject=subjects.task(record.priority, record.skill),
                task_id=record.task_id,
                task=task_message_of(record, self._default_backoff),
                attempts=attempts,
                stream_seq=record.stream_seq,
                series=max((a.series for a in attempts), default=1),
            )
            msg_id = f"dlq:{record.task_id}:{record.attempt_offset}"
            subject = subjects.dlq_task(record.skill, record.task_id)
            outgoing.append(Outgoing(subject, encode(fit_dead_letter(letter, budget)), msg_id))
        for record, result in zip(records, await self._publisher.publish_many(outgoing), strict=True):
            if isinstance(result, PublishFailedError):
                # The task is `dead` in the database either way and can be re-run with `claw task retry`.
                log.error("dlq.publish_failed", task_id=record.task_id, error=str(result))
                continue
            if record.attempt_offset > 0:
                await self._supersede(record)
            log.info("dlq.dead_lettered", task_id=record.task_id, skill=record.skill)

    async def publish_poison(self, letters: list[DeadLetter]) -> list[bool]:
        """Dead-letter poison messages workers reported (checked by `coordinator/poison_reports.py`),
        on `<prefix>.dlq.<skill>`; whether each was stored. The message id is the poisoned message's
        place in the tasks stream, so a report redelivered (or made by two workers) is one letter."""
        subjects = self._conn.subjects
        outgoing = [
            Outgoing(subjects.dlq(letter.skill), encode(letter), f"poison:{subjects.tasks_stream}:{letter.stream_seq}")
            for letter in letters
        ]
        stored = []
        for letter, result in zip(letters, await self._publisher.publish_many(outgoing), strict=True):
            if isinstance(result, PublishFailedError):
                log.error(
                    "dlq.poison_publish_failed", skill=letter.skill, node_id=letter.reported_by, error=str(result)
                )
            else:
                log.info("dlq.poison_dead_lettered", skill=letter.skill, node_id=letter.reported_by)
            stored.append(not isinstance(result, PublishFailedError))
        return stored

    async def _supersede(self, record: TaskRecord) -> None:
        """Keep only the newest letter of a task that died in a later series."""
        subjects = self._conn.subjects
        try:
            await self._conn.js.purge_stream(
                subjects.dlq_stream, subject=subjects.dlq_task(record.skill, record.task_id), keep=1
            )
        except NATS_ERRORS as exc:
            log.warning("dlq.supersede_failed", task_id=record.task_id, error=str(exc))

    async def total(self) -> int:
        """Letters in the DLQ (what `claw status` and `claw_dlq_messages` report)."""
        return (await self._conn.js.stream_info(self._conn.subjects.dlq_stream)).state.messages

    async def list_page(
        self, *, skill: str | None, limit: int, before: int | None
    ) -> tuple[list[DeadLetterView], int | None]:
        """Up to `limit` letters below stream sequence `before` (all: None), newest first, optionally
        of one skill; and the `before` to go on from (None when nothing older is left)."""
        stream = self._conn.subjects.dlq_stream
        info = await self._conn.js.stream_info(stream)
        first = max(info.state.first_seq, 1)
        seq = info.state.last_seq if before is None else min(before - 1, info.state.last_seq)
        views: list[DeadLetterView] = []
        seen: set[str] = set()
        scanned = 0
        while seq >= first and len(views) < limit and scanned < SCAN_PER_PAGE:
            view = await self._get(stream, seq)
            seq -= 1
            scanned += 1
            if view is None or (skill is not None and view.letter.skill != skill):
                continue
            task_id = view.letter.task_id
            if task_id is not None:
                if task_id in seen:
                    continue  # an older letter of the same task (written by an older version)
                seen.add(task_id)
            views.append(view)
        return views, (seq + 1 if seq >= first else None)

    async def letter_of(self, task_id: str, skill: str) -> DeadLetterView | None:
        """The current dead letter of a task, if it has one."""
        subjects = self._conn.subjects
        stream = subjects.dlq_stream
        try:
            msg = await self._conn.js.get_last_msg(stream, subjects.dlq_task(skill, task_id))
            return self._view(msg.seq or 0, msg.subject or "", msg.data or b"")
        except NotFoundError:
            pass
        return await self._legacy_letter_of(task_id, skill)

    async def _legacy_letter_of(self, task_id: str, skill: str) -> DeadLetterView | None:
        """A letter on the skill's shared subject (written by an older version, or a poison one)."""
        subjects = self._conn.subjects
        stream, subject = subjects.dlq_stream, subjects.dlq(skill)
        found: DeadLetterView | None = None
        seq = 1
        while True:
            try:
                msg = await self._conn.js.get_msg(stream, seq, subject=subject, next=True)
            except NotFoundError:
                return found
            view = self._view(msg.seq or seq, msg.subject or "", msg.data or b"")
            if view.letter.task_id == task_id:
                found = view  # the newest wins
            seq = view.seq + 1

    async def remove(self, view: DeadLetterView) -> None:
        """Take one letter out of the DLQ (its task runs again); gone already is fine."""
        try:
            await self._conn.js.delete_msg(self._conn.subjects.dlq_stream, view.seq)
        except NotFoundError:
            pass
        except NATS_ERRORS as exc:
            log.warning("dlq.remove_failed", seq=view.seq, task_id=view.letter.task_id, error=str(exc))
        else:
            log.info("dlq.removed", seq=view.seq, task_id=view.letter.task_id)

    async def purge(self, *, skill: str | None, older_than_s: float | None) -> int:
        """Remove dead letters (of one skill; older than a duration); returns how many went."""
        js, subjects = self._conn.js, self._conn.subjects
        stream = subjects.dlq_stream
        # A skill's letters: its tasks' own subjects and its shared one (poison, older versions).
        filters: list[str | None] = [None] if skill is None else [subjects.dlq(skill), subjects.dlq_tasks_of(skill)]
        before = (await js.stream_info(stream)).state.messages
        first_kept = (
            None if older_than_s is None else await self._first_seq_newer_than(self._clock.now() - older_than_s)
        )
        for subject in filters:
            if first_kept is None:
                await js.purge_stream(stream, subject=subject)
            else:
                await js.purge_stream(stream, subject=subject, seq=first_kept)
        after = (await js.stream_info(stream)).state.messages
        return before - after

    async def _first_seq_newer_than(self, cutoff: float) -> int | None:
        """The first letter dead at or after `cutoff` (None: every letter is older)."""
        subjects = self._conn.subjects
        seq = 1
        while True:
            try:
                msg = await self._conn.js.get_msg(subjects.dlq_stream, seq, subject=subjects.dlq_all, next=True)
            except NotFoundError:
                return None
            view = self._view(msg.seq or seq, msg.subject or "", msg.data or b"")
            if view.letter.dead_at >= cutoff:
                return view.seq
            seq = view.seq + 1

    async def _get(self, stream: str, seq: int) -> DeadLetterView | None:
        try:
            msg = await self._conn.js.get_msg(stream, seq)
        except NotFoundError:
            return None  # deleted or purged
        except NATS_ERRORS as exc:
            log.warning("dlq.read_failed", seq=seq, error=str(exc))
            return None
        return self._view(seq, msg.subject or "", msg.data or b"")

    def _view(self, seq: int, subject: str, data: bytes) -> DeadLetterView:
        try:
            letter = decode(data, DeadLetter)
        except DecodeError:
            # `<prefix>.dlq.<skill token>[.<task id>]`
            token = subject[len(self._conn.subjects.prefix) + len(".dlq.") :].split(".", 1)[0]
            letter = DeadLetter(
                kind="unreadable",
                reason="this DLQ entry could not be decoded",
                dead_at=0.0,
                skill=skill_from_token(token),
                subject=subject,
            )
        return DeadLetterView(seq=seq, letter=letter)
