"""A process's start-up calls to NATS, retried with backoff until one deadline for the whole start.

A fresh replicated cluster answers JetStream requests only after it has elected its leaders, and a
server under load may let a KV read time out: neither is a reason for a worker or coordinator to die
at start (7 of 7 fresh workers did on a new 3-node cluster). Only transient failures are retried - a
timeout, no responders, JetStream unavailable, a connection in the middle of reconnecting; a refusal
(a bad stream config, a node id in use) fails at once. Past the deadline the process stops with one
line that says what it waited for.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from common.errors import NatsUnavailableError
from common.log import get_logger

log = get_logger("communication.startup")

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (
    TimeoutError,  # nats.errors.TimeoutError derives from it
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionClosedError,
    ConnectionError,
)


class StartupCalls:
    """Runs each start-up step with retries; all steps share one deadline, counted from creation."""

    def __init__(self, deadline_s: float, *, initial_wait_s: float = 0.2, max_wait_s: float = 5.0) -> None:
        self._deadline_s = deadline_s
        self._ends = time.monotonic() + deadline_s
        self._initial_wait_s = initial_wait_s
        self._max_wait_s = max_wait_s

    async def __call__(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`await call()`, retried while it fails transiently and the deadline allows."""

        def retrying(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            log.warning(
                "startup.retrying",
                waiting_for=what,
                attempt=state.attempt_number,
                error=(str(exc) or type(exc).__name__) if exc is not None else None,
                retry_in_s=round(state.next_action.sleep, 2) if state.next_action is not None else None,
            )

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(max(0.0, self._ends - time.monotonic())),
                # Doubling from initial_wait_s up to max_wait_s, with jitter so restarted workers spread out.
                wait=wait_exponential(multiplier=self._initial_wait_s, max=self._max_wait_s) + wait_random(0, 0.2),
                retry=retry_if_exception_type(TRANSIENT),
                before_sleep=retrying,
                reraise=True,
            ):
                with attempt:
                    return await call()
        except TRANSIENT as exc:
            reason = str(exc) or type(exc).__name__
            raise NatsUnavailableError(
                f"gave up after {self._deadline_s:g} s waiting for {what} ({reason}); check that NATS with "
                "JetStream is up and reachable (`claw status`, the nats-server log), or allow longer with "
                "nats.startup_deadline_s"
            ) from None
        raise AssertionError("unreachable: tenacity either returns, raises or reraises")  # pragma: no cover
