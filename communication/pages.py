"""Pages of the coordinator's list replies, and going through them on the client.

A list verb answers one page (`Page`): its items, a `next_cursor` when more follow, and the `total`
on the first page. `collect` gathers pages until a limit (or the end) and says whether more exist,
which is what `claw ... --limit N` shows; `iterate` yields every item of every page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One reply of a list verb."""

    items: list[T]
    next_cursor: str | None = None
    total: int | None = None


@dataclass(frozen=True, slots=True)
class Listing(Generic[T]):
    """The items a caller asked for; `more` when the list goes on beyond them; `total` when known."""

    items: list[T]
    more: bool = False
    total: int | None = None


# Fetches the page after `cursor` (None: the first) of at most `limit` items.
FetchPage = Callable[[str | None, int], Awaitable[Page[T]]]


async def collect(fetch: FetchPage[T], *, limit: int | None, page_size: int) -> Listing[T]:
    """The first `limit` items (every item: None), fetched page by page."""
    items: list[T] = []
    cursor: str | None = None
    total: int | None = None
    while True:
        want = page_size if limit is None else max(1, min(page_size, limit - len(items)))
        page = await fetch(cursor, want)
        total = page.total if total is None else total
        items.extend(page.items)
        if page.next_cursor is None or page.next_cursor == cursor:
            return Listing(items[:limit] if limit is not None else items, False, total)
        if limit is not None and len(items) >= limit:
            return Listing(items[:limit], True, total)
        cursor = page.next_cursor


async def iterate(fetch: FetchPage[T], *, page_size: int) -> AsyncIterator[T]:
    """Every item of the list, one page in memory at a time."""
    cursor: str | None = None
    while True:
        page = await fetch(cursor, page_size)
        for item in page.items:
            yield item
        if page.next_cursor is None or page.next_cursor == cursor:
            return
        cursor = page.next_cursor
