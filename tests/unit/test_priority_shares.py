"""The pull loop's priority shares: high first, yet normal and low get their documented share."""

from __future__ import annotations

from collections import Counter

import pytest

from common.priority_shares import PriorityShares
from common.states import PRIORITIES, Priority

H, N, L = Priority.HIGH, Priority.NORMAL, Priority.LOW


def run(shares: PriorityShares, waiting: set[Priority], slots: int) -> list[Priority]:
    """Start `slots` tasks one free slot at a time while every priority in `waiting` has work."""
    order: list[Priority] = []
    for _ in range(slots):
        chosen = shares.choose(waiting)
        assert chosen is not None
        shares.started(chosen, 1, waiting)
        order.append(chosen)
    return order


def test_high_takes_the_next_free_slot_over_a_low_backlog() -> None:
    shares = PriorityShares()
    run(shares, {L}, 50)  # a long low-only spell owes low nothing
    assert run(shares, {H, L}, 9) == [H] * 9


def test_low_gets_one_start_in_ten_under_a_constant_high_stream() -> None:
    order = run(PriorityShares(), {H, L}, 1000)
    assert Counter(order)[L] == 100
    assert order[:10] == [H] * 9 + [L]


def test_normal_gets_one_start_in_five_under_a_constant_high_stream() -> None:
    order = run(PriorityShares(), {H, N}, 1000)
    assert Counter(order)[N] == 200
    assert order[:5] == [H] * 4 + [N]


def test_all_three_waiting_split_about_72_18_10() -> None:
    counts = Counter(run(PriorityShares(), set(PRIORITIES), 10_000))
    assert counts[L] == pytest.approx(1000, abs=20)
    assert counts[N] == pytest.approx(1800, abs=100)
    assert counts[H] == pytest.approx(7200, abs=100)


def test_room_caps_a_batch_of_high_before_the_low_share_is_due() -> None:
    shares = PriorityShares()
    assert shares.room(H, {H, L}) == 9
    shares.started(H, 9, {H, L})
    assert shares.choose({H, L}) is L
    assert shares.room(L, {H, L}) == 1
    assert shares.room(H, {H}) > 1000  # nothing lower waits: no cap


def test_a_priority_found_empty_is_owed_nothing() -> None:
    shares = PriorityShares()
    shares.started(H, 9, {H, L})
    shares.idle(L)
    assert run(shares, {H, L}, 9) == [H] * 9


def test_shares_are_configurable_and_checked() -> None:
    order = run(PriorityShares({N: 2, L: 4}), {H, L}, 8)
    assert order == [H, H, H, L] * 2
    with pytest.raises(ValueError, match="share of high"):
        PriorityShares({H: 3})
