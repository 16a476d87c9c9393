"""Task ids sort by creation and stay strictly increasing within one process."""

from __future__ import annotations

from common.ids import UlidGenerator, is_ulid, new_id, ulid_time_ms


def test_ids_are_strictly_increasing_even_within_one_millisecond() -> None:
    generator = UlidGenerator()
    ids = [generator.new(now_ms=1_700_000_000_000) for _ in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000


def test_ids_sort_by_time_and_encode_it() -> None:
    generator = UlidGenerator()
    early = generator.new(now_ms=1_700_000_000_000)
    late = generator.new(now_ms=1_700_000_000_001)
    assert early < late
    assert ulid_time_ms(early) == 1_700_000_000_000


def test_a_clock_step_back_does_not_break_order() -> None:
    generator = UlidGenerator()
    first = generator.new(now_ms=1_700_000_000_500)
    assert generator.new(now_ms=1_700_000_000_000) > first


def test_shape() -> None:
    value = new_id()
    assert len(value) == 26 and is_ulid(value)
    assert not is_ulid("not-an-id")
    assert not is_ulid(value + "\n")


def test_the_encoding_is_crockford_base32_of_the_128_bits() -> None:
    import random

    from common.ids import _encode, ulid_floor

    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    rng = random.Random(7)
    for value in [0, 1, (1 << 128) - 1, *(rng.getrandbits(128) for _ in range(200))]:
        expected = "".join(alphabet[(value >> (5 * i)) & 31] for i in reversed(range(26)))
        assert _encode(value, 26) == expected
    floor = ulid_floor(1_700_000_000.5)
    assert ulid_time_ms(floor) == 1_700_000_000_500 and floor.endswith("0" * 16)
    assert UlidGenerator().new(now_ms=1_700_000_000_500) >= floor


def test_client_ids_must_be_ulids_of_a_plausible_time() -> None:
    from common.ids import UlidGenerator, implausible_id_reason

    now = 1_750_000_000.0

    def reason(at_s: float) -> str | None:
        return implausible_id_reason(UlidGenerator().new(now_ms=int(at_s * 1000)), now_s=now, max_future_s=300)

    assert reason(now) is None and reason(now + 299) is None and reason(now - 3 * 365 * 86400) is None
    assert "in the future" in (reason(now + 301) or "")
    assert "before 2020" in (reason(1_000_000_000) or "")
    assert "not a valid ULID" in (implausible_id_reason("8" + "0" * 25, now_s=now, max_future_s=300) or "")
    assert "not a valid ULID" in (implausible_id_reason("not-an-id", now_s=now, max_future_s=300) or "")
    # The last representable time (year 10889) is still described, not an overflow.
    assert "in the future" in (implausible_id_reason("7" + "Z" * 25, now_s=now, max_future_s=300) or "")


def test_overlong_ids_are_shown_cut_short_with_their_length() -> None:
    from common.ids import shown_id

    assert shown_id("01J0000000000000000000000A") == "01J0000000000000000000000A"
    shown = shown_id("X" * 500_000)
    assert len(shown) < 60 and shown.endswith("(500000 characters)")
