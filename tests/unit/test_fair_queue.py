"""Weighted fair queueing between tenants (coordinator/tenants/fair_queue.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from common.states import Priority
from coordinator.tenants.fair_queue import FairQueue


def drain(queue: FairQueue[int], n: int, eligible: set[str] | None = None) -> list[str]:
    served = []
    for _ in range(n):
        got = queue.pop(lambda t: eligible is None or t in eligible)
        if got is None:
            break
        served.append(got[0])
    return served


def test_equal_weights_alternate() -> None:
    queue: FairQueue[int] = FairQueue()
    for i in range(10):
        queue.push("a", i)
        queue.push("b", i)
    assert drain(queue, 20) == ["a", "b"] * 10
    assert len(queue) == 0


def test_a_newcomer_gets_its_weighted_share_at_once_not_after_the_flood() -> None:
    queue: FairQueue[int] = FairQueue()
    for i in range(5000):
        queue.push("a", i)
    assert drain(queue, 1000) == ["a"] * 1000  # alone: every slot
    for i in range(100):
        queue.push("b", i, weight=2.0)
    served = drain(queue, 150)
    assert Counter(served) == {"b": 100, "a": 50}  # weight 2 against 1: two of every three
    assert served[:3].count("b") == 2


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 3.0), (2.0, 5.0)])
def test_shares_follow_weights_while_both_wait(weights: tuple[float, float]) -> None:
    queue: FairQueue[int] = FairQueue()
    for i in range(2000):
        queue.push("a", i, weight=weights[0])
        queue.push("b", i, weight=weights[1])
    counts = Counter(drain(queue, 1000))
    assert counts["b"] / 1000 == pytest.approx(weights[1] / sum(weights), abs=0.01)


def test_an_idle_tenant_banks_no_credit() -> None:
    queue: FairQueue[int] = FairQueue()
    queue.push("b", 0)
    assert drain(queue, 1) == ["b"]
    for i in range(100):
        queue.push("a", i)
    drain(queue, 50)  # b idle meanwhile
    for i in range(10):
        queue.push("b", i)
    assert drain(queue, 10) == ["b", "a"] * 5  # b shares from now on, it does not catch up


def test_ineligible_tenants_are_skipped_and_keep_their_place() -> None:
    queue: FairQueue[int] = FairQueue()
    for i in range(4):
        queue.push("a", i)
        queue.push("b", i)
    assert drain(queue, 3, eligible={"a"}) == ["a", "a", "a"]  # b at its max_running
    assert drain(queue, 3) == ["b", "a", "b"]  # b shares again, without a burst to catch up
    assert queue.pop(lambda t: False) is None


def test_high_first_within_a_tenant_without_starving_low() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(20):
        queue.push("a", f"low-{i}", priority=Priority.LOW)
    for i in range(20):
        queue.push("a", f"high-{i}", priority=Priority.HIGH)
    items = [got[1] for got in (queue.pop() for _ in range(20)) if got is not None]
    assert items[:9] == [f"high-{i}" for i in range(9)]
    assert items[9] == "low-0"
    assert queue.backlog("a") == 20 and queue.tenants() == {"a": 20}
    with pytest.raises(ValueError, match="weight"):
        queue.push("a", "x", weight=0)


def test_the_dispatchers_lanes_per_limit_key_are_forgotten_once_idle() -> None:
    """With flow control a lane is per limit key (one per host, per model): idle ones must not pile up."""
    from types import SimpleNamespace

    from common.config import TenantSettings
    from common.states import Priority
    from coordinator.tenants.dispatcher import FairDispatcher

    dispatcher = FairDispatcher(TenantSettings(fair_share=True), SimpleNamespace(), SimpleNamespace(gate=None))  # type: ignore[arg-type]
    for i in range(100):
        lane = ("http.request", Priority.NORMAL, f"http:host{i}")
        dispatcher._queues[lane] = FairQueue()
        dispatcher._ahead[lane].discard("t")  # a late discard re-makes an empty set
    dispatcher._ahead[("x", Priority.NORMAL, "")].add("still-ahead")
    dispatcher._forget_idle_lanes()
    assert not dispatcher._queues and list(dispatcher._ahead) == [("x", Priority.NORMAL, "")]
