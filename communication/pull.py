"""Pull requests on a durable consumer, speaking the JetStream pull protocol directly.

nats-py's `fetch()` always waits for at least one message (up to its timeout) and raises instead of
returning an empty list. A worker that serves many (skill, priority) consumers needs the opposite: ask
each consumer "whatever you have, up to N, right now" (`no_wait`), so that it never holds more messages
than it has free slots and an empty consumer costs one round trip, not a timeout. The coordinator's
single event consumer additionally long-polls (`fetch`) to wait for the next event.

Only one request is outstanding per `PullConsumer` at a time (a lock), so a status message ends exactly
the request it answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from common.errors import CommunicationError
from communication.connection import NatsConnection

# Status codes JetStream sends on a pull inbox (ADR-13).
NO_MESSAGES = "404"
REQUEST_TIMEOUT = "408"
CONFLICT = "409"
NO_RESPONDERS = "503"
IDLE_HEARTBEAT = "100"
_END_OF_REQUEST = {NO_MESSAGES, REQUEST_TIMEOUT}


class ConsumerUnavailableError(CommunicationError):
    """The consumer answered a pull with an error status (deleted, no leader, no JetStream)."""

    code = "consumer_unavailable"


class PullConsumer:
    """Pulls messages from one durable consumer of one stream."""

    def __init__(self, conn: NatsConnection, stream: str, consumer: str) -> None:
        self._conn = conn
        self.stream = stream
        self.consumer = consumer
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = conn.nc.new_inbox()
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe the inbox that pull responses are delivered to."""
        if self._sub is None:
            enqueue: Callable[[Msg], Awaitable[None]] = self._enqueue
            self._sub = await self._conn.nc.subscribe(self._inbox, cb=enqueue)

    async def stop(self) -> None:
        """Unsubscribe; messages delivered afterwards are redelivered after the ack wait."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _enqueue(self, msg: Msg) -> None:
        self._queue.put_nowait(msg)

    async def fetch_nowait(self, batch: int, *, timeout_s: float = 5.0) -> list[Msg]:
        """Up to `batch` messages the consumer has now; `[]` at once when it has none."""
        async with self._lock:
            return await self._request({"batch": batch, "no_wait": True}, batch, timeout_s)

    async def fetch(self, batch: int, *, wait_s: float) -> list[Msg]:
        """Up to `batch` messages, waiting up to `wait_s` for the first; `[]` if none came."""
        async with self._lock:
            msgs = await self._request({"batch": batch, "no_wait": True}, batch, wait_s + 5.0)
            if msgs:
                return msgs
            expires_ns = max(int(wait_s * 1e9) - 1_000_000, 1_000_000)
            msgs = await self._request({"batch": 1, "expires": expires_ns}, 1, wait_s + 5.0)
            if msgs and batch > 1:
                msgs += await self._request({"batch": batch - 1, "no_wait": True}, batch - 1, 5.0)
            return msgs

    async def _request(self, request: dict[str, object], batch: int, timeout_s: float) -> list[Msg]:
        if self._sub is None:
            raise CommunicationError(f"pull consumer {self.consumer} is not started")
        await self._conn.nc.publish(self._next_subject, json.dumps(request).encode(), reply=self._inbox)
        msgs: list[Msg] = []
        try:
            async with asyncio.timeout(timeout_s):
                while len(msgs) < batch:
                    msg = self._queue.get_nowait() if not self._queue.empty() else await self._queue.get()
                    status = msg.headers.get("Status") if msg.headers else None
                    if status is None:
                        msgs.append(msg)
                    elif status in _END_OF_REQUEST:
                        break
                    elif status != IDLE_HEARTBEAT:
                        description = msg.headers.get("Description", "") if msg.headers else ""
                        raise ConsumerUnavailableError(
                            f"consumer {self.stream}/{self.consumer} refused a pull: {status} {description}"
                        )
        except TimeoutError:
            # No answer in time (a reconnect, a slow server): return what arrived; the caller polls again.
            pass
        return msgs
