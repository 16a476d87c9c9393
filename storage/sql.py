"""Helpers for building SQL: `IN (...)` lists that stay within SQLite's limit of bound parameters."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

# Below SQLite's default limit of 999 parameters per statement, leaving room for a few others.
SQLITE_MAX_PARAMS = 900
T = TypeVar("T")


def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """`items` in slices small enough to bind as one `IN (...)` list."""
    for start in range(0, len(items), SQLITE_MAX_PARAMS):
        yield items[start : start + SQLITE_MAX_PARAMS]


def placeholders(count: int) -> str:
    """`?,?,?` for `count` parameters."""
    return ",".join("?" * count)
