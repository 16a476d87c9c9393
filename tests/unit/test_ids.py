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
