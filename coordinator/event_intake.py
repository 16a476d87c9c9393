"""The loop that pulls task events from JetStream and commits them to SQLite in batches.

Order of a step: pull up to `event_batch_max` events (waiting up to a second for the first), fold
them all and commit one transaction (holding the task book's lock, so commits happen in the order
the changes were made), then publish the dead letters and ack each event; the new states are then
announced by an after-commit listener (`coordinator/broadcast.py`), held back until the batch is
done. A crash before the acks redelivers the batch after
`events_ack_wait_s`; folding is idempotent, so nothing is counted twice. A database that refuses
the write stops intake (retrying) rather than acking events that were not recorded.

Only a worker publishes events, each under its own node id (`<prefix>.events.<node_id>.<task_id>`,
bound to its credentials by the server): an event whose body names another node or task than its
subject, or that speaks for an attempt another node holds, is refused as forged (a security event:
quarantined and logged as `security.event_refused`). Still, one that cannot be decoded or folded (garbage, an
unknown task, a transition the table forbids, a bug in folding) must never stop intake: it is
logged, recorded in the quarantine table with the batch (`claw quarantine list`), and acked with
the batch like any other event. Folding is all or nothing, so a quarantined event changed nothing.

A worker's report of a task message it could not decode (`<prefix>.events.<node_id>.poison`) is no
task event: it is checked (`coordinator/poison_reports.py`) and the coordinator publishes the dead
letter itself, before acking the report; a report no worker could honestly make is quarantined.
"""

from __future__ import annotations

import asyncio

import nats.errors
from nats.aio.msg import Msg

from common.clock import Clock
from common.errors import BadEventError, ForgedEventError, StorageError
from common.events import TaskEvent
from common.ids import shown_id
from common.log import get_logger
from common.models import CancelNotice, DeadLetter
from communication.codec import DecodeError, decode_event, encode
from communication.connection import NATS_ERRORS, NatsConnection
from communication.pull import ConsumerUnavailableError, PullConsumer
from communication.subjects import POISON_TOKEN
from communication.topology import Topology
from coordinator.commit_listeners import CommitListeners
from coordinator.dead_letters import DeadLetterOffice
from coordinator.event_folding import EventFolder
from coordinator.poison_reports import poison_letter
from coordinator.task_book import TaskBook
from storage.quarantine_store import KEEP_BYTES
from storage.records import QuarantineRecord, WriteBatch
from storage.task_writer import TaskWriter

log = get_logger("coordinator.events")

WAIT_FOR_EVENTS_S = 1.0
MAX_RETRY_DELAY_S = 5.0


class EventIntake:
    """Consumes `<PREFIX>_EVENTS` through the coordinator's durable consumer."""

    def __init__(
        self,
        conn: NatsConnection,
        topology: Topology,
        writer: TaskWriter,
        book: TaskBook,
        folder: EventFolder,
        dead_letters: DeadLetterOffice,
        clock: Clock,
        *,
        batch_max: int,
        listeners: CommitListeners | None = None,
    ) -> None:
        self._conn = conn
        self._clock = clock
        self._topology = topology
        self._writer = writer
        self._book = book
        self._folder = folder
        self._dead_letters = dead_letters
        self._batch_max = batch_max
        self._listeners = listeners or CommitListeners()
        subjects = conn.subjects
        self._pull = PullConsumer(conn, subjects.events_stream, subjects.events_consumer)
        self._events_subject_head = f"{subjects.prefix}.events."
        # Poison reports checked in this batch (`coordinator/poison_reports.py`), dead-lettered
        # after the commit and before their acks.
        self._poison: list[tuple[Msg, DeadLetter]] = []

    async def run(self, stopping: asyncio.Event) -> None:
        """Fold events until `stopping` is set (finishing the batch in hand)."""
        await self._pull.start()
        try:
            while not stopping.is_set():
                try:
                    msgs = await self._pull.fetch(self._batch_max, wait_s=WAIT_FOR_EVENTS_S)
                except ConsumerUnavailableError as exc:
                    log.warning("events.consumer_unavailable", error=str(exc))
                    await self._recreate_consumer(stopping)
                    continue
                if msgs:
                    await self._handle(msgs, stopping)
        finally:
            await self._pull.stop()

    async def _handle(self, msgs: list[Msg], stopping: asyncio.Event) -> None:
        with self._listeners.held():
            batch = await self._commit_and_ack(msgs, stopping)
        for record in batch.recancel:
            notice = CancelNotice(reason="cancelled before it started", series=record.attempt_offset)
            await self._conn.nc.publish(self._conn.subjects.cancel(record.task_id), encode(notice))

    async def _commit_and_ack(self, msgs: list[Msg], stopping: asyncio.Event) -> WriteBatch:
        batch = WriteBatch()
        self._poison = []
        async with self._book.lock:
            for msg in msgs:
                await self._fold(msg, batch)
            await self._commit(batch, stopping)
        self._book.release_finished(list(batch.changed_tasks.values()))
        if batch.dead_letters:
            # Before the acks: if this process dies first, the redelivered final failure publishes
            # the dead letter again (deduplicated by its message id).
            await self._dead_letters.publish(batch.dead_letters)
        unrecorded: set[int] = set()
        if self._poison:
            # A report whose letter could not be published is not acked: it comes back (deduplicated).
            recorded = await self._dead_letters.publish_poison([letter for _, letter in self._poison])
            unrecorded = {id(msg) for (msg, _), ok in zip(self._poison, recorded, strict=True) if not ok}
        try:
            for msg in msgs:
                if id(msg) not in unrecorded:
                    await msg.ack()
        except nats.errors.Error as exc:
            # Not acked means redelivered after the ack wait; folding it again changes nothing.
            log.warning("events.ack_failed", error=str(exc))
        return batch

    async def _fold(self, msg: Msg, batch: WriteBatch) -> None:
        """Fold one event into `batch`, or stage it for the quarantine; only storage errors escape."""
        node_id, _, token = msg.subject.removeprefix(self._events_subject_head).partition(".")
        if token == POISON_TOKEN:
            self._poison_report(msg, node_id, batch)
            return
        try:
            event = decode_event(msg.data)
        except DecodeError as exc:
            self._quarantine(msg, batch, f"undecodable: {exc}", None)
            return
        try:
            self._check_sender(msg.subject, event)
            await self._folder.fold(event, batch)
        except StorageError:
            raise
        except ForgedEventError as exc:
            log.warning(
                "security.event_refused", task_id=shown_id(event.task_id), kind=_kind(event),
                node_id=event.node_id, subject=msg.subject[:200], reason=str(exc)[:300],
            )  # fmt: skip
            self._quarantine(msg, batch, f"refused: {exc}", event)
        except BadEventError as exc:
            self._quarantine(msg, batch, str(exc), event)
        except Exception as exc:
            # A bug in folding: the traceback is for us; the event (unchanged by the fold) waits in quarantine.
            log.exception("events.fold_failed", task_id=shown_id(event.task_id), kind=_kind(event))
            self._quarantine(msg, batch, f"folding failed: {type(exc).__name__}: {str(exc)[:300]}", event)

    def _poison_report(self, msg: Msg, node_id: str, batch: WriteBatch) -> None:
        """A node's report of a task message it could not decode: checked, then dead-lettered."""
        try:
            letter = poison_letter(self._conn.subjects, node_id, msg.data, self._clock.now())
        except ForgedEventError as exc:
            log.warning("security.poison_refused", node_id=node_id, reason=str(exc)[:300])
            self._quarantine(msg, batch, f"refused: {exc}", None)
            return
        except BadEventError as exc:
            self._quarantine(msg, batch, str(exc), None)
            return
        log.error("task.poison", node_id=node_id, subject=letter.subject, stream_seq=letter.stream_seq)
        self._poison.append((msg, letter))

    def _check_sender(self, subject: str, event: TaskEvent) -> None:
        """The event must say what its subject says (`<prefix>.events.<node_id>.<task_id>`): the
        server's permissions bind the node token to the publisher's credentials."""
        node_id, _, task_id = subject.removeprefix(self._events_subject_head).partition(".")
        if node_id != event.node_id or task_id != event.task_id:
            raise ForgedEventError(
                f"an event of node {event.node_id} for task {shown_id(event.task_id)} "
                f"published on another node's or task's subject ({subject[:120]})"
            )

    def _quarantine(self, msg: Msg, batch: WriteBatch, reason: str, event: TaskEvent | None) -> None:
        task_id: str | None = event.task_id if event is not None else msg.subject.rsplit(".", 1)[-1]
        if task_id == POISON_TOKEN:
            task_id = None  # a poison report is about no task
        try:
            stream_seq: int | None = msg.metadata.sequence.stream
        except (ValueError, AttributeError):
            stream_seq = None  # not a JetStream delivery (cannot happen on this consumer)
        kind = _kind(event) if event is not None else None
        batch.quarantined.append(
            QuarantineRecord(
                at=self._clock.now(), subject=msg.subject, stream_seq=stream_seq, task_id=task_id, kind=kind,
                reason=reason, size=len(msg.data), data=msg.data[:KEEP_BYTES],
            )
        )  # fmt: skip
        # No bytes of the event in the log: it may hold anything, secrets included.
        log.warning(
            "events.quarantined", task_id=None if task_id is None else shown_id(task_id), kind=kind,
            stream_seq=stream_seq, size=len(msg.data), reason=reason[:300],
        )  # fmt: skip

    async def _commit(self, batch: WriteBatch, stopping: asyncio.Event) -> None:
        """Write the batch, retrying while the database refuses: the state in memory is already ahead."""
        delay = 0.1
        while True:
            try:
                await self._writer.write_batch(batch)
                return
            except StorageError as exc:
                if stopping.is_set():
                    raise  # unacked, so redelivered to the next coordinator run
                log.error("events.commit_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)

    async def _recreate_consumer(self, stopping: asyncio.Event) -> None:
        delay = 0.5
        while not stopping.is_set():
            try:
                await self._topology.ensure_events_consumer()
                return
            except NATS_ERRORS as exc:
                log.warning("events.consumer_recreate_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)


def _kind(event: TaskEvent) -> str:
    return type(event).__name__.removeprefix("Task").lower()
