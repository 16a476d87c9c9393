"""The live use of every limit key: who holds it, recent starts and tokens, cooldown and breaker.

One `KeyUse` per key, kept by the coordinator only (it is the one place every start passes), so the
sum over all workers is what is checked. Holders are task ids (a task's permit, taken when it is
published and given back at its outcome) or permit ids (a handler's per-call `ctx.limit`).

The breaker of a key: `closed` normally; `breaker_failures` consecutive failures that are the API's
fault (rate limit, disconnect, timeout, server error) open it for `breaker_open_s`; then it is
`half_open`: one start (the probe) is let through; its success closes the breaker, its failure opens
it again. Cooldowns are separate: a 429 (for its Retry-After, else `cooldown_s`) or a dropped
connection (`cooldown_s`) stops every start on the key until it passes.
"""

from __future__ import annotations

import bisect
import contextlib
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from common.api import LimitView
from common.flow import BREAKER_REASONS, FailureReason, Limit

TOKEN_WINDOW_S = 60.0
MINUTE_S = 60.0


class Breaker(StrEnum):
    """A key's circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class KeyUse:
    """One key's limit and use."""

    key: str
    limit: Limit | None = None
    # holder -> tokens charged for it (estimate until reconciled).
    holders: dict[str, int] = field(default_factory=dict)
    # Start times, oldest first: when a worker started the task (as its `running` says) or a
    # handler's call took its permit.
    starts: deque[float] = field(default_factory=deque)
    # Holders let through whose start is not known yet: each counts as a start in every window
    # until it is (a task is published some time before a worker starts it; counting it from the
    # publish would let the next window's starts reach the API too early after a slow pick-up).
    pending: dict[str, None] = field(default_factory=dict)
    # holder -> the start recorded for it, while only approximate (its attempt's start: the call
    # itself comes a little later); a later, exact time (the call's own) replaces it.
    approximate: dict[str, float] = field(default_factory=dict)
    # (time, tokens, holder) charged, oldest first.
    tokens: deque[list[object]] = field(default_factory=deque)
    cooldown_until: float = 0.0
    cooldown_reason: str = ""
    failures: int = 0
    breaker: Breaker = Breaker.CLOSED
    open_until: float = 0.0
    probe: str | None = None
    # Handlers waiting in `permit_acquire` for this key (tasks do not overtake them).
    callers_waiting: int = 0
    # How much longer than its window a start is counted (FlowSettings.rate_margin_s).
    margin_s: float = 0.0

    def available(self, now: float) -> str | None:
        """Why the key takes no start at all now (cooldown, open breaker), else None."""
        if now < self.cooldown_until:
            return f"cooling down {self.cooldown_until - now:.1f} s ({self.cooldown_reason})"
        if self.breaker == Breaker.OPEN:
            if now < self.open_until:
                return f"breaker open {self.open_until - now:.1f} s after {self.failures} failures"
            self.breaker = Breaker.HALF_OPEN
        if self.breaker == Breaker.HALF_OPEN and self.probe is not None:
            return "breaker half-open: a probe is running"
        return None

    def room(self, now: float, tokens: int) -> str | None:
        """Why one more start with `tokens` does not fit now, else None."""
        unavailable = self.available(now)
        if unavailable is not None:
            return unavailable
        limit = self.limit
        if limit is None:
            return None
        if limit.concurrency is not None and len(self.holders) >= limit.concurrency:
            return f"concurrency {len(self.holders)}/{limit.concurrency}"
        if limit.requests is not None:
            since = now - limit.window_s - self._margin(limit)
            self._prune_starts(min(since, now - MINUTE_S))  # `limits list` shows the last minute
            in_window = len(self.starts) - bisect.bisect_left(self.starts, since)
            if in_window + len(self.pending) >= limit.requests:
                return f"rate {limit.describe()}"
        if limit.tokens_per_minute is not None:
            used = self.tokens_used(now)
            if used > 0 and used + tokens > limit.tokens_per_minute:
                return f"tokens {used}/{limit.tokens_per_minute} per minute"
        return None

    def next_room_in(self, now: float) -> float:
        """A guess of when room may appear (for a caller to wait before asking again)."""
        waits = [0.05]
        if now < self.cooldown_until:
            waits.append(self.cooldown_until - now)
        if self.breaker == Breaker.OPEN and now < self.open_until:
            waits.append(self.open_until - now)
        if self.limit is not None and self.limit.requests is not None and self.starts:
            since = now - self.limit.window_s - self._margin(self.limit)
            first = bisect.bisect_left(self.starts, since)
            if first < len(self.starts):
                waits.append(self.starts[first] + self.limit.window_s + self._margin(self.limit) - now)
        return max(waits)

    def charge(self, holder: str, now: float, tokens: int, *, started: bool = False) -> None:
        """`holder` takes a place in the concurrency and a start (now, or when `started` says)."""
        self.holders[holder] = tokens
        if started:
            bisect.insort(self.starts, now)
        else:
            self.pending[holder] = None
        if tokens:
            self.tokens.append([now, tokens, holder])
        if self.breaker == Breaker.HALF_OPEN:
            self.probe = holder

    def expect_start(self, holder: str) -> None:
        """A holder will start again (a retry, a reclaimed attempt): count it until it does."""
        if holder in self.holders:
            self.pending[holder] = None
            self.approximate.pop(holder, None)

    def started(self, holder: str, at: float, *, exact: bool = False) -> None:
        """A holder started at `at`: its attempt (approximate: the call comes later) or its call
        (`exact`), which replaces an approximate start when it is later."""
        if self.pending.pop(holder, 0) is None:
            bisect.insort(self.starts, at)
            if not exact:
                self.approximate[holder] = at
            return
        earlier = self.approximate.pop(holder, None) if exact else None
        if earlier is not None and at > earlier:
            with contextlib.suppress(ValueError):  # pruned meanwhile: the window is long past it
                self.starts.remove(earlier)
            bisect.insort(self.starts, at)

    def release(self, holder: str) -> bool:
        """Give back `holder`'s place; True if it held one."""
        if self.probe == holder:
            self.probe = None
        self.pending.pop(holder, None)  # ended without starting: it made no call
        self.approximate.pop(holder, None)
        return self.holders.pop(holder, None) is not None

    def reconcile(self, holder: str, used: int) -> None:
        """Replace the estimate charged for `holder` with what it really used (the first time)."""
        for entry in self.tokens:
            if entry[2] == holder:
                entry[1] = used
                entry[2] = None  # reconciled: later usage of the same holder adds up
                return
        if used:
            self.tokens.append([self._last_time(), used, None])

    def tokens_used(self, now: float) -> int:
        """Tokens charged in the last minute."""
        while self.tokens and float(self.tokens[0][0]) < now - TOKEN_WINDOW_S:  # type: ignore[arg-type]
            self.tokens.popleft()
        return sum(int(entry[1]) for entry in self.tokens)  # type: ignore[call-overload]

    def succeeded(self) -> None:
        """A start on the key worked: failures reset, the breaker closes."""
        self.failures = 0
        self.breaker = Breaker.CLOSED
        self.probe = None

    def failed(self, reason: FailureReason, now: float, *, breaker_failures: int, breaker_open_s: float) -> bool:
        """Count a failure for the breaker; True when it opened the breaker."""
        if reason not in BREAKER_REASONS:
            return False
        self.failures += 1
        probe_failed = self.breaker == Breaker.HALF_OPEN
        if probe_failed or (self.breaker == Breaker.CLOSED and self.failures >= breaker_failures):
            self.breaker = Breaker.OPEN
            self.open_until = now + breaker_open_s
            self.probe = None
            return True
        return False

    def cool(self, until: float, reason: str) -> bool:
        """Stop starts until `until`; True if that extends the cooldown."""
        if until <= self.cooldown_until:
            return False
        self.cooldown_until, self.cooldown_reason = until, reason
        return True

    def view(self, now: float, waiting: int) -> LimitView:
        """The key's limit and use for `claw limits list`."""
        available = self.available(now)
        del available  # refreshes an open breaker that timed out
        return LimitView(
            key=self.key,
            limit=self.limit,
            in_flight=len(self.holders),
            requests_last_minute=sum(1 for at in self.starts if now - MINUTE_S <= at <= now),
            tokens_last_minute=self.tokens_used(now),
            waiting=waiting + self.callers_waiting,
            cooldown_s=round(max(0.0, self.cooldown_until - now), 3),
            cooldown_reason=self.cooldown_reason if now < self.cooldown_until else "",
            breaker=self.breaker.value,
            consecutive_failures=self.failures,
        )

    def _margin(self, limit: Limit) -> float:
        """How much longer than its window a start is counted (FlowSettings.rate_margin_s)."""
        return self.margin_s + limit.window_s / 100

    def _prune_starts(self, before: float) -> None:
        while self.starts and self.starts[0] < before:
            self.starts.popleft()

    def _last_time(self) -> float:
        return float(self.tokens[-1][0]) if self.tokens else 0.0  # type: ignore[arg-type]

    @property
    def idle(self) -> bool:
        """Nothing to remember about this key (no limit, no use, no cooldown, breaker closed)."""
        return (
            self.limit is None
            and not self.holders
            and not self.starts
            and not self.tokens
            and self.breaker == Breaker.CLOSED
            and self.failures == 0
            and self.callers_waiting == 0
        )


class Ledger:
    """Every key's use."""

    def __init__(self, *, margin_s: float = 0.0) -> None:
        self.keys: dict[str, KeyUse] = {}
        self._margin_s = margin_s

    def use(self, key: str) -> KeyUse:
        """The key's use (created empty on first mention)."""
        found = self.keys.get(key)
        if found is None:
            found = self.keys[key] = KeyUse(key, margin_s=self._margin_s)
        return found

    def room(self, keys: list[str], now: float, tokens: int) -> tuple[str, str] | None:
        """(key, why) of the first key with no room for one more start, else None."""
        for key in keys:
            why = self.use(key).room(now, tokens)
            if why is not None:
                return key, why
        return None

    def unavailable(self, keys: list[str], now: float) -> tuple[str, str] | None:
        """(key, why) of the first key cooling down or with its breaker open, else None."""
        for key in keys:
            use = self.keys.get(key)
            why = None if use is None else use.available(now)
            if why is not None:
                return key, why
        return None

    def charge(self, keys: list[str], holder: str, now: float, tokens: int) -> None:
        """One start of `holder` on every key."""
        for key in keys:
            self.use(key).charge(holder, now, tokens)

    def release(self, keys: list[str], holder: str) -> None:
        """`holder` gives its places back."""
        for key in keys:
            use = self.keys.get(key)
            if use is not None:
                use.release(holder)
