"""The project's clock.

Code that stamps or compares times takes a `Clock` instead of calling `time` directly, so tests can
move time (node liveness, approval expiry) without touching the host clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall time for timestamps that are stored or shown, monotonic time for intervals."""

    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...


class SystemClock:
    """The host's clocks."""

    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on the host's monotonic clock."""
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to; for tests."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0

    def now(self) -> float:
        """The current manual wall time."""
        return self._now

    def monotonic(self) -> float:
        """The current manual monotonic time."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by `seconds`."""
        self._now += seconds
        self._mono += seconds


SYSTEM_CLOCK = SystemClock()
