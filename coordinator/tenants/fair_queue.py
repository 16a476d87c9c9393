"""Weighted fair queueing between tenants: which waiting task of which tenant goes next.

Each tenant with waiting tasks is a lane with a virtual time (`pass_`). The lane with the smallest
virtual time among the eligible ones gives the next task, and its virtual time then advances by
`1 / weight`: under contention a tenant of weight 2 gets two tasks for every one of a tenant of
weight 1, whatever either submitted. A lane that was empty re-enters at the current virtual time,
so a tenant banks no credit while it is idle (or held back by its own `max_running`) and a newcomer
waits behind no flood (stride scheduling,
the unit-size case of WFQ). Within a lane the priority shares of the pull loop apply
(common/priority_shares.py): high first, normal and low never starve.

Pure and synchronous, so it is unit-tested without NATS (tests/unit/test_fair_queue.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from common.priority_shares import PriorityShares
from common.states import PRIORITIES, Priority

T = TypeVar("T")


@dataclass(slots=True)
class _Lane(Generic[T]):
    weight: float
    pass_: float
    order: int
    items: dict[Priority, deque[T]] = field(default_factory=lambda: {p: deque() for p in PRIORITIES})
    shares: PriorityShares = field(default_factory=PriorityShares)
    size: int = 0

    def pop(self) -> T:
        priority = self.shares.choose([p for p in PRIORITIES if self.items[p]])
        assert priority is not None  # the lane is not empty
        item = self.items[priority].popleft()
        self.size -= 1
        still = [p for p in PRIORITIES if self.items[p]]
        self.shares.started(priority, 1, still)
        for empty in set(PRIORITIES) - set(still):
            self.shares.idle(empty)  # nothing of it waits: it is owed nothing
        return item


class FairQueue(Generic[T]):
    """Items waiting per tenant; `pop` serves the tenants in proportion to their weights."""

    def __init__(self) -> None:
        self._lanes: dict[str, _Lane[T]] = {}
        self._vtime = 0.0
        self._activations = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def backlog(self, tenant: str) -> int:
        """How many items of `tenant` wait."""
        lane = self._lanes.get(tenant)
        return 0 if lane is None else lane.size

    def tenants(self) -> dict[str, int]:
        """Waiting items per tenant (tenants with none left out)."""
        return {name: lane.size for name, lane in self._lanes.items() if lane.size}

    def push(self, tenant: str, item: T, *, weight: float = 1.0, priority: Priority = Priority.NORMAL) -> None:
        """Queue `item` of `tenant` (FIFO within its priority)."""
        if weight <= 0:
            raise ValueError(f"tenant {tenant!r}: weight must be positive, not {weight}")
        lane = self._lanes.get(tenant)
        if lane is None:
            self._activations += 1
            lane = self._lanes[tenant] = _Lane(weight, self._vtime, self._activations)
        elif lane.size == 0:  # idle until now: re-enter at the current virtual time, no banked credit
            self._activations += 1
            lane.pass_, lane.order = max(lane.pass_, self._vtime), self._activations
        lane.weight = weight
        lane.items[priority].append(item)
        lane.size += 1
        self._size += 1

    def pop(self, eligible: Callable[[str], bool] = lambda tenant: True) -> tuple[str, T] | None:
        """The next item by weighted fair share among eligible tenants (None: nothing eligible waits)."""
        best: tuple[float, int, str] | None = None
        skipped: list[_Lane[T]] = []
        for name, lane in self._lanes.items():
            if not lane.size:
                continue
            if not eligible(name):
                skipped.append(lane)
            elif best is None or (lane.pass_, lane.order) < best[:2]:
                best = (lane.pass_, lane.order, name)
        if best is None:
            return None
        name = best[2]
        lane = self._lanes[name]
        self._vtime = max(self._vtime, lane.pass_)
        for held in skipped:  # held back by its own max_running: it banks no credit meanwhile
            held.pass_ = max(held.pass_, self._vtime)
        lane.pass_ += 1.0 / lane.weight
        self._size -= 1
        item = lane.pop()
        if lane.size == 0 and lane.pass_ <= self._vtime:
            del self._lanes[name]  # it would re-enter at the virtual time anyway: keep memory bounded
        return name, item
