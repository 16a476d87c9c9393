"""Sortable identifiers.

Task ids are ULIDs: 48 bits of milliseconds since the epoch followed by 80 random bits, written as 26
Crockford base32 characters. They sort by creation time as plain strings (so SQLite's primary key
index doubles as the time index), and ids made by one process are strictly increasing even within one
millisecond.
"""

from __future__ import annotations

import datetime
import os
import re
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
ULID_PATTERN = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
# No clock-made ULID of this project predates 2020-01-01T00:00:00Z.
EARLIEST_PLAUSIBLE_S = 1_577_836_800
# How much of an overlong id an error message shows.
SHOWN_ID_CHARS = 32


# Every 10-bit value as its two Crockford characters: an id is 13 lookups instead of 26 steps.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def _encode(value: int, length: int) -> str:
    pairs = []
    for _ in range(length // 2):
        pairs.append(_PAIRS[value & 1023])
        value >>= 10
    if length % 2:
        pairs.append(_ALPHABET[value & 31])
    return "".join(reversed(pairs))


class UlidGenerator:
    """Makes monotonic ULIDs; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def new(self, now_ms: int | None = None) -> str:
        """Return a new id, greater than every id this generator returned before."""
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        with self._lock:
            if ms <= self._last_ms:
                # Same (or an earlier, after a clock step back) millisecond: keep order by counting up.
                ms = self._last_ms
                rnd = self._last_random + 1
                if rnd > _RANDOM_MAX:
                    ms += 1
                    rnd = int.from_bytes(os.urandom(10), "big") >> 1
            else:
                # The top bit stays clear so that counting up within a millisecond cannot overflow.
                rnd = int.from_bytes(os.urandom(10), "big") >> 1
            self._last_ms, self._last_random = ms, rnd
        return _encode((ms << _RANDOM_BITS) | rnd, 26)


_default = UlidGenerator()


def new_id() -> str:
    """A new sortable id (a ULID) from the process-wide generator."""
    return _default.new()


def ulid_time_ms(ulid: str) -> int:
    """The creation time, in ms since the epoch, encoded in a ULID."""
    value = 0
    for char in ulid[:10]:
        value = (value << 5) | _ALPHABET.index(char)
    return value


def is_ulid(text: str) -> bool:
    """Whether `text` has the shape of an id made by `new_id`."""
    return bool(ULID_PATTERN.fullmatch(text))


def ulid_floor(at: float) -> str:
    """The smallest id of the millisecond `at` (Unix seconds): no id made from then on sorts before it."""
    return _encode(int(at * 1000) << _RANDOM_BITS, 26)


def implausible_id_reason(text: str, *, now_s: float, max_future_s: float) -> str | None:
    """Why a client-chosen task id is refused, or None when it is a ULID of a plausible time.

    Plausible: dated no earlier than 2020 and no more than `max_future_s` ahead of `now_s` (clock
    skew between machines). Ids sort by their time, so a far-future id would stay at the top of
    every newest-first list for ever.
    """
    if not is_ulid(text) or text[0] > "7":  # 26 characters hold 130 bits; a ULID has 128
        return "is not a valid ULID (26 characters of Crockford base32, the first one 0-7)"
    at_s = ulid_time_ms(text) / 1000
    if at_s > now_s + max_future_s:
        return (
            f"is dated {_utc(at_s)}, in the future: more than {max_future_s:g} s ahead of the coordinator's "
            "clock (coordinator.task_id_max_future_s); make ids when submitting, on a machine with a correct clock"
        )
    if at_s < EARLIEST_PLAUSIBLE_S:
        return f"is dated {_utc(at_s)}, before 2020: not an id made by a ULID generator at submit time"
    return None


def shown_id(text: str) -> str:
    """An id as error messages show it: an overlong one cut short, with its length."""
    if len(text) <= SHOWN_ID_CHARS:
        return text
    return f"{text[:SHOWN_ID_CHARS]}... ({len(text)} characters)"


def _utc(at_s: float) -> str:
    try:
        return datetime.datetime.fromtimestamp(at_s, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError):
        return f"{at_s:.0f} s after 1970"
