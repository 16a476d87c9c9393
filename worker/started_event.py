"""The `started` event of an attempt, sent late or not at all.

Most tasks of a busy cluster are over in milliseconds; for them a `started` event is one more
JetStream publish, ack and fold that tells nobody anything (the outcome carries `started_at`).
`DeferredStart` sends it only once the attempt has run `delay_s`, or at once when the handler
emits anything else first (progress, a log line, an artifact), so the timeline keeps its order.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from common.events import TaskEvent, TaskStarted


class DeferredStart:
    """Sends `started` after `delay_s` unless `settle` is called first; thread-safe `emit`."""

    def __init__(
        self, started: TaskStarted, emit: Callable[[TaskEvent], None], loop: asyncio.AbstractEventLoop, delay_s: float
    ) -> None:
        self._started = started
        self._emit = emit
        self._lock = threading.Lock()
        self._sent = False
        self._settled = False
        self._timer: asyncio.TimerHandle | None = None
        if delay_s <= 0:
            self.send()
        else:
            self._timer = loop.call_later(delay_s, self.send)

    def send(self) -> None:
        """Send `started` now, if it was not sent and the attempt is not over."""
        with self._lock:
            if self._sent or self._settled:
                return
            self._sent = True
            self._emit(self._started)  # inside the lock: nothing the handler emits can overtake it
        # The timer is left to fire (a no-op now): cancelling it is not safe from a handler thread.

    def emit(self, event: TaskEvent) -> None:
        """Emit one of the attempt's own events, `started` first if it is still pending."""
        self.send()
        self._emit(event)

    def settle(self) -> bool:
        """The attempt is over: cancel a pending `started`; returns whether it was sent."""
        with self._lock:
            self._settled = True
            sent = self._sent
        if self._timer is not None:
            self._timer.cancel()
        return sent
