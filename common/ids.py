"""Sortable identifiers.

Task ids are ULIDs: 48 bits of milliseconds since the epoch followed by 80 random bits, written as 26
Crockford base32 characters. They sort by creation time as plain strings (so SQLite's primary key
index doubles as the time index), and ids made by one process are strictly increasing even within one
millisecond.
"""

from __future__ import annotations

import os
import re
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
ULID_PATTERN = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


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
