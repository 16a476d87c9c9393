"""The submit pipeline: persist, publish, confirm — in batches, so that load raises throughput
instead of latency.

Requests are queued by the API handler; one loop takes everything waiting (up to `submit_batch_max`
tasks) and, for the whole batch:

1. resolves client-chosen task ids and idempotency keys (an existing one answers with the existing
   task and writes nothing) and checks each skill's queue limit and the limit of tasks held for
   approval (a request that would overflow one is refused whole with "queue full");
2. commits the new tasks as `pending`, with their `submitted` events, in one transaction;
3. publishes them to JetStream pipelined, `Nats-Msg-Id` = idempotency key or task id;
4. answers each request, wakes idle workers, and records `queued`: in the transaction of the next
   batch's step 2 when one comes within `QUEUED_COMMIT_WAIT_S`, else in a transaction of its own.
   Under load every batch carries the previous one's `queued`, and a lone submit does not make the
   next one wait behind a commit of its own.

A task is accepted once step 2 commits. If publishing fails or the process dies before step 4 is
written, the task stays `pending` and `republish_pending` publishes it again later with the same
message id, so JetStream's duplicate window absorbs a publish that did in fact get through. A
worker's `started` that arrives before `queued` is written moves the task on by itself (folding).
A task whose message is larger than the server's max_payload can never be published (admission
moves such inputs to the artifact store, so only a task persisted before that, or a server whose
limit shrank, gets here): it ends `failed` with the sizes, instead of being republished for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from common.api import SubmitResult
from common.clock import Clock
from common.config import CoordinatorSettings
from common.errors import ClawError, CoordinatorUnavailableError, InvalidInputError, QueueFullError, StorageError
from common.event_kinds import EventKind
from common.ids import new_id
from common.log import get_logger
from common.states import TaskState
from communication.codec import encode
from communication.connection import NATS_ERRORS, NatsConnection
from communication.publisher import JetStreamPublisher, MessageTooLargeError, Outgoing, PublishFailedError
from coordinator.state_machine import transition
from coordinator.task_book import TaskBook
from coordinator.task_wire import default_backoff, input_ref_of, task_message_of, task_msg_id
from storage.records import EventRecord, TaskRecord, WriteBatch
from storage.task_queries import TaskQueries
from storage.task_writer import TaskWriter

log = get_logger("coordinator.submission")

# How long `queued` waits to ride along with the next batch's commit before it is written alone.
QUEUED_COMMIT_WAIT_S = 0.005

# A published batch whose `queued` is not written yet: its records, their acks, when they were sent.
Unconfirmed = tuple[list[TaskRecord], dict[str, PubAck], float]


class SubmitGate(Protocol):
    """A feature that may refuse or hold back admitted tasks (tenants: coordinator/tenants/)."""

    def refusal(self, new: list[TaskRecord], added: Counter[str]) -> ClawError | None:
        """Why this request's `new` tasks may not be stored (`added`: tasks per tenant earlier in
        the batch), or None. A refusal refuses the whole request; nothing of it is stored."""
        ...

    def hold(self, new: list[TaskRecord]) -> list[EventRecord]:
        """Mark (`held_for_share`) the new pending tasks not to publish now; returns timeline rows
        saying why. Called with the book lock held, just before the tasks are committed."""
        ...

    def adopt(self, stuck: list[TaskRecord]) -> list[TaskRecord]:
        """Of the tasks pending too long, those to publish again now (the rest the gate holds)."""
        ...


@dataclass(slots=True)
class SubmitJob:
    """One admitted request waiting for the pipeline; `done` receives its results or error."""

    records: list[TaskRecord]
    done: asyncio.Future[list[SubmitResult]]
    # Loop time by which the job is stored or refused: never stored after its client gave up.
    deadline: float
    # Filled by the pipeline, one per record: the new task or the existing one its id/key names.
    results: list[SubmitResult] = field(default_factory=list)


class SubmitPipeline:
    """Owns the path from an admitted request to a queued task."""

    def __init__(
        self,
        conn: NatsConnection,
        writer: TaskWriter,
        queries: TaskQueries,
        book: TaskBook,
        settings: CoordinatorSettings,
        clock: Clock,
        *,
        artifact_ttl_s: float = 0.0,
        write_blocked: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._artifact_ttl_s = artifact_ttl_s
        # Why the database fence would hold a write back now (the lease overdue): refuse, not wait.
        self._write_blocked = write_blocked
        self._conn = conn
        self._writer = writer
        self._queries = queries
        self._book = book
        self._settings = settings
        self._clock = clock
        self._backoff = default_backoff(settings)
        self._publisher = JetStreamPublisher(conn)
        self._queue: asyncio.Queue[SubmitJob] = asyncio.Queue()
        self._publishing: set[str] = set()
        # Published batches whose `queued` is not written yet: (records, their acks, when acked).
        self._unconfirmed: list[Unconfirmed] = []
        # `queued` moves already made in the task book whose commit failed: written with the next one.
        self._unwritten = WriteBatch()
        # Features that may refuse or hold back admitted tasks, added by their `register`.
        self.gates: list[SubmitGate] = []
        # Flow control's gate (coordinator/flow/): holds tasks whose limit keys have no room.
        self.gate: PublishGate | None = None

    def submit(self, records: list[TaskRecord]) -> asyncio.Future[list[SubmitResult]]:
        """Queue admitted records; the future resolves once they are persisted and published."""
        loop = asyncio.get_running_loop()
        job = SubmitJob(records, loop.create_future(), loop.time() + self._settings.submit_answer_s)
        blocked = self._write_blocked()
        if blocked is not None:
            # Refused at the door: the pipeline itself may be waiting on the same fence.
            job.done.set_exception(_not_writable(blocked))
            return job.done
        self._queue.put_nowait(job)
        return job.done

    async def run(self, stopping: asyncio.Event) -> None:
        """Process queued requests until `stopping` is set and the queue is empty."""
        while not (stopping.is_set() and self._queue.empty()):
            try:
                async with asyncio.timeout(QUEUED_COMMIT_WAIT_S if self._unconfirmed else 0.2):
                    first = await self._queue.get()
            except TimeoutError:
                await self.flush_queued()
                continue
            jobs = [first]
            size = len(first.records)
            while not self._queue.empty() and size < self._settings.submit_batch_max:
                job = self._queue.get_nowait()
                jobs.append(job)
                size += len(job.records)
            await self._process(jobs)
        await self.flush_queued()

    async def flush_queued(self) -> None:
        """Write the `queued` of every published batch still waiting for a commit to ride along."""
        if not self._unconfirmed and not self._unwritten:
            if self._book.lock.locked():
                # Another flush or a submit commit may have staged them already and be writing
                # them under the lock: a read must not see `pending` because it came just then.
                async with self._book.lock:
                    pass
            return
        async with self._book.lock:
            batch = WriteBatch()
            _, withdrawn = self._stage_queued(batch)
            await self._write_queued(batch)
        await self._withdraw_all(withdrawn)

    async def _process(self, jobs: list[SubmitJob]) -> None:
        try:
            new = await self._persist(jobs)
        except ClawError as exc:
            for job in jobs:
                if not job.done.done():
                    job.done.set_exception(exc)
            return
        runnable = [r for r in new if r.state == TaskState.PENDING and not r.held_for_share]
        if self.gate is not None and runnable:
            runnable = await self.gate.admit(runnable)
        # Stamped before the publish: a worker can start the task before our ack arrives.
        sent_at = self._clock.now()
        publishing = asyncio.ensure_future(self._publish(runnable))
        deadline = min(job.deadline for job in jobs)
        await asyncio.wait([publishing], timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
        if not publishing.done():
            # JetStream has not confirmed in time (no quorum, a leader election, overload): the tasks
            # are stored, so say so now rather than let the clients time out; the publish goes on,
            # and `republish-pending` keeps trying after it.
            for job in jobs:
                if not job.done.done():
                    job.done.set_result([_not_yet_queued(r) for r in job.results])
        queued = await publishing
        failed = {r.task_id: r for r in runnable if r.state == TaskState.FAILED}
        held = {r.task_id: r.tenant for r in new if r.held_for_share}
        for job in jobs:
            if job.done.done():
                continue
            job.done.set_result([_published_result(r, queued, failed, held) for r in job.results])
        if queued:
            self._unconfirmed.append((runnable, queued, sent_at))

    async def _persist(self, jobs: list[SubmitJob]) -> list[TaskRecord]:
        """Commit the new tasks as pending; answer duplicates; refuse jobs that overflow a queue.

        Fills each accepted job's `results` (a refused job's future gets `QueueFullError`) and returns
        the records that were written.
        """
        keys = {r.idempotency_key for job in jobs for r in job.records if r.idempotency_key}
        existing_keys = await self._queries.find_by_idempotency_keys(keys) if keys else {}
        chosen = [r.task_id for job in jobs for r in job.records if r.id_from_client]
        existing_ids = await self._queries.existing_ids(chosen) if chosen else {}
        batch = WriteBatch()
        added: Counter[str] = Counter()
        added_tenant: Counter[str] = Counter()
        added_held = 0
        for job in jobs:
            results, new = self._resolve(job.records, existing_keys, existing_ids)
            held = sum(1 for r in new if _will_be_held(r))
            refusal = (
                _key_of_another_tenant(job.records, existing_keys)
                or self._queue_full(new, added)
                or self._approvals_full(held, added_held)
                or next((r for g in self.gates if (r := g.refusal(new, added_tenant)) is not None), None)
            )
            if refusal is not None:
                job.done.set_exception(refusal)
                continue
            added_held += held
            for record in new:
                added[record.skill] += 1
                added_tenant[record.tenant] += 1
                existing_ids[record.task_id] = record.state
                if record.idempotency_key:
                    existing_keys[record.idempotency_key] = (record.task_id, record.state, record.tenant)
                batch.new_tasks.append(record)
                batch.events.append(
                    EventRecord.of(
                        EventKind.SUBMITTED,
                        record.task_id,
                        record.created_at,
                        to_state=TaskState.PENDING,
                        data=None if record.submitter is None else {"submitter": record.submitter},
                    )
                )
                guarded = self._apply_guard(record)
                if guarded is not None:
                    batch.events.append(guarded)
                ref = input_ref_of(record.input)
                if ref is not None:
                    expires = record.created_at + self._artifact_ttl_s if self._artifact_ttl_s else None
                    batch.artifacts.append(
                        (record.task_id, 0, ref.name, ref.size, ref.sha256, ref.content_type, ref.backend, ref.key,
                         record.created_at, expires)
                    )  # fmt: skip
            by_id = {r.task_id: r for r in new}
            job.results = [self._final_result(r, by_id.get(r.task_id)) for r in results]
        written = {id(r) for r in batch.new_tasks}
        for job in jobs:
            for record in job.records:
                if record.state != TaskState.PENDING or id(record) not in written:
                    _end_span(record, record.state.value)  # held, denied, duplicate or refused: no publish
        withdrawn: list[int] = []
        if batch or self._unconfirmed or self._unwritten:
            async with self._book_lock_by(min(job.deadline for job in jobs), bool(batch.new_tasks)):
                staged, withdrawn = self._stage_queued(batch)
                for gate in self.gates:
                    batch.events.extend(gate.hold([r for r in batch.new_tasks if r.state == TaskState.PENDING]))
                try:
                    await self._writer.write_batch(batch)
                except StorageError as exc:
                    log.error("submit.persist_failed", error=str(exc), tasks=len(batch.new_tasks))
                    for record in batch.new_tasks:
                        _end_span(record, "not persisted")
                    self._unconfirmed[:0] = staged  # cancelled ones are withdrawn by a later batch
                    self._keep_unwritten(batch)  # and their `queued` is written with it
                    fault = self._writer.fault
                    raise _not_stored(fault.reason if fault else str(exc)) from None
                for record in batch.new_tasks:
                    self._book.add(record)
                self._book.release_finished(batch.new_tasks)
        await self._withdraw_all(withdrawn)
        return batch.new_tasks

    @contextlib.asynccontextmanager
    async def _book_lock_by(self, deadline: float, storing: bool) -> AsyncIterator[None]:
        """Hold the task book's lock; a submit that would wait past `deadline` while the database
        refuses writes is refused unstored instead.

        While the database refuses writes, whoever holds the lock (the event intake retrying its
        commit) may hold it for long: a submit must neither wait for it nor be stored after its
        client gave up (it would run although the client was told it failed).
        """
        fault = self._writer.fault
        if storing and fault is not None and self._book.lock.locked():
            raise _not_stored(fault.reason)
        blocked = self._write_blocked() if storing else None
        if blocked is not None:
            raise _not_writable(blocked)
        try:
            async with asyncio.timeout_at(deadline if storing else None):
                await self._book.lock.acquire()
        except TimeoutError:
            fault = self._writer.fault
            if fault is not None:
                raise _not_stored(fault.reason) from None
            # Busy but healthy: store late rather than refuse; a client that timed out meanwhile
            # and retries with the same id or key is answered with this very task.
            await self._book.lock.acquire()
        try:
            yield
        finally:
            self._book.lock.release()

    def _apply_guard(self, record: TaskRecord) -> EventRecord | None:
        """Hold a task for approval, or record the guard's denial; None when it may run."""
        if record.denied is not None:
            record.finished_at = record.created_at
            record.error_type, record.error_message = "Denied", record.denied
            data: dict[str, object] = {"rule": record.guard_rule, "reason": record.denied, "risk": record.risk}
            return transition(record, TaskState.REJECTED, at=record.created_at, kind=EventKind.DENIED, data=data)
        if record.approvals_needed > 0:
            record.held_until = record.created_at + self._settings.approval_ttl_s
            data = {"rule": record.guard_rule, "approvals": record.approvals_needed, "risk": record.risk}
            return transition(record, TaskState.WAITING_APPROVAL, at=record.created_at, kind=EventKind.HELD, data=data)
        return None

    @staticmethod
    def _final_result(result: SubmitResult, record: TaskRecord | None) -> SubmitResult:
        """The answer for a new task once the guard has spoken."""
        if result.duplicate or record is None or record.state == TaskState.PENDING:
            return result
        if record.state == TaskState.REJECTED:
            note = f"denied by guard rule '{record.guard_rule}': {record.denied}"
        else:
            note = (
                f"held by guard rule '{record.guard_rule}' ({record.risk}): needs {record.approvals_needed} "
                f"approval(s); `claw approve {record.task_id}`"
            )
        return msgspec.structs.replace(
            result,
            state=record.state,
            note=note,
            rule=record.guard_rule or "",
            approvals_needed=record.approvals_needed if record.state == TaskState.WAITING_APPROVAL else 0,
        )

    @staticmethod
    def _resolve(
        records: list[TaskRecord],
        existing_keys: dict[str, tuple[str, TaskState, str]],
        existing_ids: dict[str, TaskState],
    ) -> tuple[list[SubmitResult], list[TaskRecord]]:
        results: list[SubmitResult] = []
        new: list[TaskRecord] = []
        seen: dict[str, tuple[str, TaskState]] = {}
        seen_ids: set[str] = set()
        for record in records:
            key = record.idempotency_key
            if record.task_id in existing_ids:
                results.append(SubmitResult(task_id=record.task_id, state=existing_ids[record.task_id], duplicate=True))
            elif record.task_id in seen_ids:  # a client-chosen id twice in one request: one task
                results.append(SubmitResult(task_id=record.task_id, state=TaskState.PENDING, duplicate=True))
            elif key and key in existing_keys:
                task_id, state, _ = existing_keys[key]
                results.append(SubmitResult(task_id=task_id, state=state, duplicate=True))
            elif key and key in seen:
                task_id, state = seen[key]
                results.append(SubmitResult(task_id=task_id, state=state, duplicate=True))
            else:
                if key:
                    seen[key] = (record.task_id, record.state)
                seen_ids.add(record.task_id)
                results.append(SubmitResult(task_id=record.task_id, state=TaskState.PENDING))
                new.append(record)
        return results, new

    def _queue_full(self, new: list[TaskRecord], added: Counter[str]) -> QueueFullError | None:
        limit = self._settings.max_queued_per_skill
        for skill, count in Counter(r.skill for r in new).items():
            waiting = self._book.waiting(skill) + added[skill]
            if waiting + count > limit:
                return QueueFullError(
                    f"queue full: skill '{skill}' has {waiting} tasks waiting and the limit is {limit} "
                    f"(coordinator.max_queued_per_skill); this request adds {count}. Nothing in this request was "
                    "submitted: retry later (claw submit --queue-wait), add workers, or raise the limit"
                )
        return None

    def _approvals_full(self, held: int, added_held: int) -> QueueFullError | None:
        """Held tasks have a limit of their own: they hold no queue slot, but every one is a row to
        list and decide on, and without a bound a flood of risky submits fills the database."""
        limit = self._settings.max_waiting_approval
        waiting = self._book.count(TaskState.WAITING_APPROVAL) + added_held
        if held == 0 or waiting + held <= limit:
            return None
        return QueueFullError(
            f"approvals full: {waiting} tasks wait for approval and the limit is {limit} "
            f"(coordinator.max_waiting_approval); this request would hold {held} more. Nothing in this request "
            "was submitted: decide on held tasks (`claw approvals`, `claw approve`/`reject`), let them expire, "
            "or raise the limit"
        )

    async def _publish(self, records: list[TaskRecord], *, nonce: str | None = None) -> dict[str, PubAck]:
        """Publish records and wake idle workers; returns the acks of those confirmed."""
        records = [r for r in records if r.task_id not in self._publishing]
        if not records:
            return {}
        self._publishing.update(r.task_id for r in records)
        subjects = self._conn.subjects
        try:
            outgoing = [
                Outgoing(
                    subjects.task(r.priority, r.skill),
                    encode(task_message_of(r, self._backoff)),
                    task_msg_id(r, nonce),
                    {"traceparent": r.traceparent} if r.traceparent else None,
                )
                for r in records
            ]
            results = await self._publisher.publish_many(outgoing)
        finally:
            self._publishing.difference_update(r.task_id for r in records)
        acks: dict[str, PubAck] = {}
        woken: set[tuple[str, str]] = set()
        unpublishable: list[tuple[TaskRecord, MessageTooLargeError]] = []
        for record, result in zip(records, results, strict=True):
            _end_span(record, "published" if isinstance(result, PubAck) else "publish failed")
            if isinstance(result, MessageTooLargeError):
                unpublishable.append((record, result))
                continue
            if isinstance(result, PublishFailedError):
                log.warning("submit.publish_failed", task_id=record.task_id, error=str(result))
                continue
            acks[record.task_id] = result
            woken.add((record.skill, record.priority.value))
        for skill, priority in woken:
            await self._conn.nc.publish(subjects.wake(skill), priority.encode())
        if unpublishable:
            await self._fail_unpublishable(unpublishable)
        return acks

    async def _fail_unpublishable(self, items: list[tuple[TaskRecord, MessageTooLargeError]]) -> None:
        """End `failed` the pending tasks whose message can never be published."""
        failed: list[TaskRecord] = []
        async with self._book.lock:
            now = self._clock.now()
            batch = WriteBatch()
            for record, error in items:
                if record.state != TaskState.PENDING:
                    # Published once already (a repost of a lost message): it cannot be failed from here.
                    log.error(
                        "submit.unpublishable", task_id=record.task_id, state=record.state.value, error=str(error)
                    )
                    continue
                record.finished_at = now
                record.error_type = "PayloadTooLarge"
                record.error_message = (
                    f"the task message is {error.size} bytes with its headers, over the NATS server's max_payload of "
                    f"{error.max_payload} bytes, so it can never be published; submit the input through the artifact "
                    "store (claw submit does for inputs over artifacts.inline_max_bytes)"
                )
                data = {"bytes": error.size, "max_payload": error.max_payload}
                batch.events.append(
                    self._book.move(record, TaskState.FAILED, at=now, kind=EventKind.UNPUBLISHABLE, data=data)
                )
                batch.touch(record)
                failed.append(record)
            if not failed:
                return
            await self._writer.write_batch(batch)
            self._book.release_finished(failed)
        for record in failed:
            log.error("submit.unpublishable", task_id=record.task_id, error=record.error_message)

    async def _publish_and_commit_queued(self, records: list[TaskRecord]) -> None:
        """Publish records and write `queued` for them now (re-runs and republishing)."""
        sent_at = self._clock.now()
        acks = await self._publish(records)
        self._unconfirmed.append((records, acks, sent_at))
        await self.flush_queued()

    def _stage_queued(self, batch: WriteBatch) -> tuple[list[Unconfirmed], list[int]]:
        """Move every unconfirmed batch's `queued` into `batch` (the book lock is held).

        Returns what was staged (to put back if the write fails) and the stream sequences of tasks
        cancelled while they were being published, to withdraw from the queue.
        """
        staged, self._unconfirmed = self._unconfirmed, []
        withdrawn: list[int] = []
        unwritten, self._unwritten = self._unwritten, WriteBatch()
        for record in unwritten.changed_tasks.values():
            batch.touch(record)
        batch.events.extend(unwritten.events)
        for records, acks, sent_at in staged:
            for record in records:
                ack = acks.get(record.task_id)
                if ack is None:
                    continue  # not confirmed: published again later
                if record.state == TaskState.CANCELLED:
                    withdrawn.append(ack.seq)  # cancelled while being published
                    continue
                record.stream_seq = ack.seq
                batch.touch(record)
                if record.state != TaskState.PENDING:
                    continue  # a worker's `started` came first and already moved it on
                record.queued_at = sent_at
                batch.events.append(self._book.move(record, TaskState.QUEUED, at=sent_at, kind=EventKind.QUEUED))
        return staged, withdrawn

    async def _write_queued(self, batch: WriteBatch) -> None:
        if not batch:
            return
        try:
            await self._writer.write_batch(batch)
        except StorageError as exc:
            # The tasks are in the stream; the database still says pending, which after a
            # restart means "publish again" (deduplicated by message id) - never lost.
            log.error("submit.mark_queued_failed", error=str(exc))
            self._keep_unwritten(batch)

    def _keep_unwritten(self, batch: WriteBatch) -> None:
        """Keep the `queued` part of a batch whose commit failed, for the next commit.

        The task book already moved those tasks to `queued`; staging them again would only touch
        them, so their rows and timeline events are carried over here instead of being lost.
        """
        for event in batch.events:
            if event.kind == EventKind.QUEUED:
                self._unwritten.events.append(event)
                self._unwritten.touch(batch.changed_tasks[event.task_id])

    async def _withdraw_all(self, stream_seqs: list[int]) -> None:
        for seq in stream_seqs:
            await self.withdraw(seq)

    async def withdraw(self, stream_seq: int) -> None:
        """Delete a task message from the queue (its task was cancelled); gone already is fine."""
        try:
            await self._conn.js.delete_msg(self._conn.subjects.tasks_stream, stream_seq)
        except NotFoundError:
            pass
        except NATS_ERRORS as exc:
            log.warning("submit.withdraw_failed", stream_seq=stream_seq, error=str(exc))

    async def publish_pending(self, records: list[TaskRecord]) -> None:
        """Publish records already committed as pending (re-runs), and confirm them queued."""
        if self.gate is not None:
            records = await self.gate.admit(records)
        await self.publish_admitted(records)

    async def publish_admitted(self, records: list[TaskRecord]) -> None:
        """Publish pending records the gate let through, and confirm them queued."""
        for start in range(0, len(records), self._settings.submit_batch_max):
            chunk = records[start : start + self._settings.submit_batch_max]
            await self._publish_and_commit_queued(chunk)

    async def republish_pending(self) -> None:
        """Publish tasks that stayed pending longer than `republish_after_s` (crash, NATS outage)."""
        cutoff = self._clock.now() - self._settings.republish_after_s
        stuck = [r for r in self._book.with_state(TaskState.PENDING) if r.updated_at <= cutoff]
        for gate in self.gates:
            stuck = gate.adopt(stuck)
        if stuck:
            log.info("submit.republish", count=len(stuck))
            await self.publish_pending(stuck)

    async def repost(self, record: TaskRecord, reason: str) -> bool:
        """Publish a fresh message for a waiting task whose message vanished from the queue.

        The new message continues the attempt numbering (`attempt_offset` = attempts so far).
        """
        async with self._book.lock:
            record.attempt_offset = record.attempts
        acks = await self._publish([record], nonce=new_id()[-8:])
        ack = acks.get(record.task_id)
        if ack is None:
            return False
        async with self._book.lock:
            record.stream_seq = ack.seq
            batch = WriteBatch()
            batch.touch(record)
            batch.events.append(
                EventRecord.of(
                    EventKind.REQUEUED,
                    record.task_id,
                    self._clock.now(),
                    attempt=record.attempts,
                    data={"reason": reason, "stream_seq": ack.seq},
                )
            )
            await self._writer.write_batch(batch)
        log.warning("task.requeued", task_id=record.task_id, reason=reason)
        return True


class PublishGate(Protocol):
    """What stands between a pending task and its publish (flow control's gate)."""

    async def admit(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """The records that may be published now; the others stay pending until it publishes them."""
        ...

    def lane(self, record: TaskRecord) -> str:
        """Which tasks wait for the same room as `record` (its limit keys; "" for none): the fair-share
        dispatcher queues them apart, so tasks waiting for a limit do not hold up the others."""
        ...


def _key_of_another_tenant(
    records: list[TaskRecord], existing_keys: dict[str, tuple[str, TaskState, str]]
) -> InvalidInputError | None:
    """Refuse a request whose idempotency key names another tenant's task: answering with that task
    would hand one tenant another's task id and state (keys are one namespace for all tenants)."""
    for record in records:
        found = existing_keys.get(record.idempotency_key) if record.idempotency_key else None
        if found is not None and found[2] != record.tenant:
            return InvalidInputError(
                f"idempotency key {record.idempotency_key!r} is taken by another tenant's task: choose another key "
                "(for example with a prefix of your own)"
            )
    return None


def _will_be_held(record: TaskRecord) -> bool:
    """Whether the guard holds this admitted task for approval (it is then not queued)."""
    return record.approvals_needed > 0 and record.denied is None


def _not_writable(reason: str) -> CoordinatorUnavailableError:
    return CoordinatorUnavailableError(
        f"{reason}; the submit was not stored (nothing will run): retry when NATS is healthy again"
    )


def _not_stored(reason: str) -> StorageError:
    return StorageError(
        f"state database: {reason}; the submit was not stored (nothing will run): "
        "retry when `claw status` no longer shows a storage fault"
    )


def _not_yet_queued(result: SubmitResult) -> SubmitResult:
    """The answer for a stored task whose publish JetStream has not confirmed within the deadline."""
    if result.duplicate or result.state != TaskState.PENDING:
        return result
    return msgspec.structs.replace(
        result,
        note="stored, not queued yet: JetStream did not confirm the publish in time (a NATS cluster without "
        "quorum, or overloaded); it is queued as soon as JetStream answers (`claw task show` follows it)",
    )


def _published_result(
    result: SubmitResult, queued: dict[str, PubAck], failed: dict[str, TaskRecord], held: dict[str, str]
) -> SubmitResult:
    """A submit's answer for one task once its publish was tried."""
    if result.duplicate:
        return result
    if result.task_id in held:
        return msgspec.structs.replace(result, note=f"waiting for tenant share (tenant {held[result.task_id]})")
    if result.task_id in queued:
        return msgspec.structs.replace(result, state=TaskState.QUEUED)
    record = failed.get(result.task_id)
    if record is not None:
        return msgspec.structs.replace(result, state=TaskState.FAILED, note=record.error_message or "")
    return result


def _end_span(record: TaskRecord, outcome: str) -> None:
    """End the coordinator's span of a task once admission and publishing are over for it."""
    span = record.span
    if span is not None:
        span.set_attribute("claw.admission", outcome)
        span.end()
        record.span = None
