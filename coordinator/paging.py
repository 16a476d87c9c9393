"""Pages of list replies: at most `limit` items, and never more bytes than one NATS message holds.

Every list verb answers one page. The items come in a stable order (task id, stream sequence, row
id, or the position in a small in-memory list); the page ends at the request's `limit` or when the
next item would take the reply past the byte budget, and `next_cursor` tells the client where to go
on from. A single item larger than a whole reply cannot be sent: that is a clear error, never a
reply the server would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from common.errors import InvalidInputError, PayloadTooLargeError
from communication.codec import encode

T = TypeVar("T")

# The most items one page may ask for; the byte budget usually ends a page well before.
MAX_PAGE_LIMIT = 10_000


def page_limit(requested: int) -> int:
    """The page size to serve: the request's, within 1..MAX_PAGE_LIMIT."""
    return max(1, min(requested, MAX_PAGE_LIMIT))


def take_page(candidates: Sequence[T], *, limit: int, budget: int, what: str) -> tuple[list[T], bool]:
    """The leading `candidates` that fit `limit` items and `budget` bytes of JSON; and whether any
    candidate was left out (then the caller sets `next_cursor`).

    Callers fetch `limit + 1` candidates, so that a left-over one says more exist.
    """
    page: list[T] = []
    used = 0
    for item in candidates:
        if len(page) >= limit:
            return page, True
        size = len(encode(item)) + 1
        if used + size > budget:
            if not page:
                raise PayloadTooLargeError(
                    f"the next {what} is {size} bytes, more than one reply can carry ({budget} bytes within "
                    "the NATS server's max_payload); raise the server's max_payload to read it"
                )
            return page, True
        used += size
        page.append(item)
    return page, False


def offset_cursor(cursor: str | None) -> int:
    """The position an offset cursor (of a small in-memory list) stands for; 0 for the first page."""
    if cursor is None:
        return 0
    try:
        offset = int(cursor)
    except ValueError:
        raise InvalidInputError(f"'{cursor}' is not a cursor of this list; pass back a reply's next_cursor") from None
    if offset < 0:
        raise InvalidInputError(f"'{cursor}' is not a cursor of this list; pass back a reply's next_cursor")
    return offset


def offset_page(
    items: Sequence[T], *, cursor: str | None, limit: int, budget: int, what: str
) -> tuple[list[T], str | None]:
    """A page of a list held in memory, from the offset `cursor` names; and the next cursor."""
    start = offset_cursor(cursor)
    page, more = take_page(items[start : start + limit + 1], limit=limit, budget=budget, what=what)
    return page, str(start + len(page)) if more else None
