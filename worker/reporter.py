"""The worker's event reporter: publishes task events to JetStream in the order they were emitted.

Events go through one FIFO queue and are published in batches (pipelined, each with its `event_id`
as `Nats-Msg-Id`), so a task's `started`, `progress` and outcome land in the stream in that order.
`emit` is fire-and-forget for progress and log lines (and callable from handler threads);
`report` waits until the event is stored, which is what a task's ack waits for.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from common.aio import wait_any
from common.events import TaskEvent
from common.log import get_logger
from communication.codec import encode
from communication.connection import NatsConnection
from communication.publisher import JetStreamPublisher, Outgoing, PublishFailedError

log = get_logger("worker.reporter")

MAX_BATCH = 512
REPORT_GIVE_UP_S = 60.0


@dataclass(slots=True)
class _Pending:
    event: TaskEvent
    stored: asyncio.Future[None] | None


class EventReporter:
    """Owns the queue of outgoing events and the loop that publishes them."""

    def __init__(self, conn: NatsConnection) -> None:
        self._conn = conn
        self._publisher = JetStreamPublisher(conn)
        self._queue: deque[_Pending] = deque()
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def emit(self, event: TaskEvent) -> None:
        """Queue an event without waiting; safe from any thread."""
        pending = _Pending(event, None)
        if _running_loop() is self._loop:
            self._enqueue(pending)
        else:
            self._loop.call_soon_threadsafe(self._enqueue, pending)

    async def report(self, event: TaskEvent, *, give_up_after_s: float = REPORT_GIVE_UP_S) -> None:
        """Queue an event and wait until JetStream stored it, retrying through a NATS outage.

        Raises `PublishFailedError` after `give_up_after_s`: the caller then leaves its task unacked,
        and JetStream redelivers it.
        """
        deadline = self._loop.time() + give_up_after_s
        delay = 0.5
        while True:
            stored: asyncio.Future[None] = self._loop.create_future()
            self._enqueue(_Pending(event, stored))
            try:
                await stored
                return
            except PublishFailedError as exc:
                # A message the server will never accept (too large) fails the same way every time.
                if exc.permanent or self._loop.time() + delay > deadline:
                    raise
                log.warning("event.report_retry", task_id=event.task_id, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish queued events until `stopping` is set and the queue is empty."""
        while True:
            if not self._queue:
                if stopping.is_set():
                    return
                self._ready.clear()
                await wait_any(self._ready, stopping)
                continue
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
            await self._publish(batch)

    async def _publish(self, batch: list[_Pending]) -> None:
        subjects = self._conn.subjects
        outgoing = [
            Outgoing(subjects.events(p.event.node_id, p.event.task_id), encode(p.event), p.event.event_id)
            for p in batch
        ]
        results = await self._publisher.publish_many(outgoing)
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, PublishFailedError):
                log.error("event.publish_failed", task_id=pending.event.task_id, error=str(result))
            if pending.stored is None or pending.stored.done():
                continue
            if isinstance(result, PublishFailedError):
                pending.stored.set_exception(result)
            else:
                pending.stored.set_result(None)

    def _enqueue(self, pending: _Pending) -> None:
        self._queue.append(pending)
        self._ready.set()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
