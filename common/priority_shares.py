"""Priorities that cannot starve: which priority gets the next free slot.

`high` takes every free slot while it has work, except the slots owed to lower priorities: a
priority waiting while higher work keeps starting is owed one slot in every `every[priority]` starts
(by default `normal` 1 in 5, `low` 1 in 10). The debt is counted in starts, not time, so it does not
depend on how long tasks run, and it is counted only while the lower priority waits: after a quiet
spell the next high task takes the next free slot at once.

With all three waiting under a constant stream, starts split about 72 % high, 18 % normal, 10 % low
(low's debt also counts normal starts). The worker's pull loop (`worker/puller.py`) asks this plan
before each fetch; it is a pure object so it can be tested without NATS.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from common.states import PRIORITIES, Priority

# One start in this many goes to the priority while higher work is waiting too (docs/Flow_control.md).
DEFAULT_SHARE_EVERY: Mapping[Priority, int] = {Priority.NORMAL: 5, Priority.LOW: 10}
# How many of a priority may start at once when no lower share is due soon.
UNBOUNDED = 1 << 30


class PriorityShares:
    """The weighted shares of the pull loop: `choose` the next priority, `room` to batch it, and
    `started` / `idle` to record what a fetch found."""

    def __init__(self, every: Mapping[Priority, int] | None = None) -> None:
        self.every = dict(DEFAULT_SHARE_EVERY if every is None else every)
        for priority, n in self.every.items():
            if priority is Priority.HIGH or n < 2:
                raise ValueError(f"share of {priority}: 1 in {n} is not a share (want normal/low, every >= 2)")
        # Starts of higher priorities since this priority last started while it was waiting.
        self.passed_over: dict[Priority, int] = dict.fromkeys(PRIORITIES, 0)

    def due(self, priority: Priority) -> bool:
        """Whether `priority` is owed the next slot."""
        every = self.every.get(priority)
        return every is not None and self.passed_over[priority] >= every - 1

    def choose(self, waiting: Collection[Priority]) -> Priority | None:
        """The priority that gets the next slot among those `waiting`: a due share (lowest first),
        else the highest waiting."""
        for priority in reversed(PRIORITIES):
            if priority in waiting and self.due(priority):
                return priority
        for priority in PRIORITIES:
            if priority in waiting:
                return priority
        return None

    def room(self, priority: Priority, waiting: Collection[Priority]) -> int:
        """How many of `priority` may start before a lower waiting priority's share falls due."""
        if self.due(priority):
            return 1
        room = UNBOUNDED
        for lower in _lower_than(priority):
            every = self.every.get(lower)
            if lower in waiting and every is not None:
                room = min(room, max(every - 1 - self.passed_over[lower], 1))
        return room

    def started(self, priority: Priority, count: int, waiting: Collection[Priority]) -> None:
        """Record `count` starts of `priority`; lower priorities still `waiting` were passed over."""
        if count <= 0:
            return
        self.passed_over[priority] = 0
        for lower in _lower_than(priority):
            if lower in waiting:
                self.passed_over[lower] += count

    def idle(self, priority: Priority) -> None:
        """`priority` had nothing to start: it is owed nothing."""
        self.passed_over[priority] = 0


def _lower_than(priority: Priority) -> tuple[Priority, ...]:
    return PRIORITIES[PRIORITIES.index(priority) + 1 :]
