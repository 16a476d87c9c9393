"""The submit pipeline: persist, publish, confirm — in batches, so that load raises throughput
instead of latency.

Requests are queued by the API handler; one loop takes everything waiting (up to `submit_batch_max`
tasks) and, for the whole batch:

1. resolves idempotency keys (an existing key answers with the existing task and writes nothing);
2. commits the new tasks as `pending`, with their `submitted` events, in one transaction;
3. publishes them to JetStream pipelined, `Nats-Msg-Id` = idempotency key or task id;
4. answers each request, wakes idle workers, and commits `queued` in one transaction.

A task is accepted once step 2 commits. If publishing fails or the process dies before step 4, the
task stays `pending` and `republish_pending` publishes it again later with the same message id, so
JetStream's duplicate window absorbs a publish that did in fact get through.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgspec
from nats.js.api import PubAck

from common.api import SubmitResult
from common.clock import Clock
from common.config import CoordinatorSettings
from common.errors import ClawError, StorageError
from common.log import get_logger
from common.models import TaskMessage
from common.states import TaskState
from communication.codec import encode
from communication.connection import NatsConnection
from communication.publisher import JetStreamPublisher, Outgoing, PublishFailedError
from coordinator.task_book import TaskBook
from storage.records import EventRecord, TaskRecord, WriteBatch
from storage.task_store import TaskStore

log = get_logger("coordinator.submission")


@dataclass(slots=True)
class SubmitJob:
    """One admitted request waiting for the pipeline; `done` receives its results or error."""

    records: list[TaskRecord]
    done: asyncio.Future[list[SubmitResult]]
    # Filled by the pipeline, one per record: the new task or the existing one its key names.
    results: list[SubmitResult] = field(default_factory=list)


def task_msg_id(record: TaskRecord) -> str:
    """The `Nats-Msg-Id` of a task's publish: stable across retries of the same series."""
    base = record.idempotency_key or record.task_id
    return base if record.attempt_offset == 0 else f"{base}#{record.attempt_offset}"


def task_message(record: TaskRecord) -> bytes:
    """The wire form of a task for workers."""
    return encode(
        TaskMessage(
            task_id=record.task_id,
            skill=record.skill,
            input=msgspec.Raw(record.input.encode()),
            priority=record.priority,
            timeout_s=record.timeout_s,
            max_attempts=record.max_attempts,
            attempt_offset=record.attempt_offset,
            submitted_at=record.created_at,
        )
    )


class SubmitPipeline:
    """Owns the path from an admitted request to a queued task."""

    def __init__(
        self,
        conn: NatsConnection,
        store: TaskStore,
        book: TaskBook,
        settings: CoordinatorSettings,
        clock: Clock,
    ) -> None:
        self._conn = conn
        self._store = store
        self._book = book
        self._settings = settings
        self._clock = clock
        self._publisher = JetStreamPublisher(conn)
        self._queue: asyncio.Queue[SubmitJob] = asyncio.Queue()
        self._publishing: set[str] = set()

    def submit(self, records: list[TaskRecord]) -> asyncio.Future[list[SubmitResult]]:
        """Queue admitted records; the future resolves once they are persisted and published."""
        job = SubmitJob(records, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return job.done

    async def run(self, stopping: asyncio.Event) -> None:
        """Process queued requests until `stopping` is set and the queue is empty."""
        while not (stopping.is_set() and self._queue.empty()):
            try:
                async with asyncio.timeout(0.2):
                    first = await self._queue.get()
            except TimeoutError:
                continue
            jobs = [first]
            size = len(first.records)
            while not self._queue.empty() and size < self._settings.submit_batch_max:
                job = self._queue.get_nowait()
                jobs.append(job)
                size += len(job.records)
            await self._process(jobs)

    async def _process(self, jobs: list[SubmitJob]) -> None:
        try:
            new = await self._persist(jobs)
        except ClawError as exc:
            for job in jobs:
                if not job.done.done():
                    job.done.set_exception(exc)
            return
        queued = await self._publish(new)
        for job in jobs:
            results = [
                msgspec.structs.replace(r, state=TaskState.QUEUED) if r.task_id in queued and not r.duplicate else r
                for r in job.results
            ]
            if not job.done.done():
                job.done.set_result(results)
        await self._commit_queued(new, queued)

    async def _persist(self, jobs: list[SubmitJob]) -> list[TaskRecord]:
        """Commit the new tasks as pending; resolve idempotency keys to existing tasks.

        Fills each job's `results` and returns the records that were written.
        """
        keys = {r.idempotency_key for job in jobs for r in job.records if r.idempotency_key}
        existing = await self._store.find_by_idempotency_keys(keys) if keys else {}
        batch = WriteBatch()
        for job in jobs:
            for record in job.records:
                key = record.idempotency_key
                if key and key in existing:
                    task_id, state = existing[key]
                    job.results.append(SubmitResult(task_id=task_id, state=state, duplicate=True))
                    continue
                if key:
                    existing[key] = (record.task_id, record.state)
                batch.new_tasks.append(record)
                batch.events.append(
                    EventRecord(
                        task_id=record.task_id,
                        kind="submitted",
                        at=record.created_at,
                        to_state=TaskState.PENDING,
                        data=None if record.submitter is None else encode({"submitter": record.submitter}).decode(),
                    )
                )
                job.results.append(SubmitResult(task_id=record.task_id, state=TaskState.PENDING))
        if batch:
            async with self._book.lock:
                try:
                    await self._store.write_batch(batch)
                except StorageError as exc:
                    log.error("submit.persist_failed", error=str(exc), tasks=len(batch.new_tasks))
                    raise
                for record in batch.new_tasks:
                    self._book.add(record)
        return batch.new_tasks

    async def _publish(self, records: list[TaskRecord]) -> dict[str, PubAck]:
        """Publish pending records and wake idle workers; returns the acks of those confirmed."""
        records = [r for r in records if r.task_id not in self._publishing]
        if not records:
            return {}
        self._publishing.update(r.task_id for r in records)
        try:
            subjects = self._conn.subjects
            outgoing = [Outgoing(subjects.task(r.priority, r.skill), task_message(r), task_msg_id(r)) for r in records]
            results = await self._publisher.publish_many(outgoing)
        finally:
            self._publishing.difference_update(r.task_id for r in records)
        acks: dict[str, PubAck] = {}
        woken: set[tuple[str, str]] = set()
        for record, result in zip(records, results, strict=True):
            if isinstance(result, PublishFailedError):
                log.warning("submit.publish_failed", task_id=record.task_id, error=str(result))
                continue
            acks[record.task_id] = result
            woken.add((record.skill, record.priority.value))
        for skill, priority in woken:
            await self._conn.nc.publish(subjects.wake(skill), priority.encode())
        return acks

    async def _commit_queued(self, records: list[TaskRecord], acks: dict[str, PubAck]) -> None:
        async with self._book.lock:
            now = self._clock.now()
            batch = WriteBatch()
            for record in records:
                ack = acks.get(record.task_id)
                if ack is None or record.state != TaskState.PENDING:
                    continue  # not confirmed (republished later), or a worker's `started` came first
                record.queued_at = now
                record.stream_seq = ack.seq
                batch.events.append(self._book.move(record, TaskState.QUEUED, at=now, kind="queued"))
                batch.touch(record)
            if not batch:
                return
            try:
                await self._store.write_batch(batch)
            except StorageError as exc:
                # The tasks are in the stream; the database still says pending, which after a
                # restart means "publish again" (deduplicated by message id) - never lost.
                log.error("submit.mark_queued_failed", error=str(exc))

    async def republish_pending(self) -> None:
        """Publish tasks that stayed pending longer than `republish_after_s` (crash, NATS outage)."""
        cutoff = self._clock.now() - self._settings.republish_after_s
        stuck = [r for r in self._book.with_state(TaskState.PENDING) if r.updated_at <= cutoff]
        if stuck:
            log.info("submit.republish", count=len(stuck))
            for start in range(0, len(stuck), self._settings.submit_batch_max):
                chunk = stuck[start : start + self._settings.submit_batch_max]
                await self._commit_queued(chunk, await self._publish(chunk))
