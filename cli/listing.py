"""List commands (`task list`, `dlq list`, `approvals`): fetch pages until `--limit N` (or `--all`),
print them, and say on stderr when the list goes on ("showing 100 of 20,000; ...").

The note goes to stderr so that a table or `--json` on stdout stays exactly the items; with `--json`
it is a JSON object too (`{"notice": ..., "shown": N, "total": M}`), like every message on stderr.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cli.output import emit_json
from cli.runner import notice, run_async
from common.config import ClawConfig
from communication.api_client import LIST_PAGE_SIZE, ClawClient
from communication.pages import Listing, Page, collect

T = TypeVar("T")

# Fetches one page with a client: (client, cursor, page size) -> page.
ClientFetch = Callable[[ClawClient, str | None, int], Awaitable[Page[T]]]


def run_listing(
    config: ClawConfig,
    fetch: ClientFetch[T],
    render: Callable[[list[T]], None],
    *,
    limit: int,
    all_: bool,
    json_out: bool,
    noun: str,
) -> None:
    """Fetch the first `limit` items (every item with `all_`), print them, note what is left."""

    async def main() -> Listing[T]:
        async with await ClawClient.connect(config.nats, name="claw-cli") as client:
            return await collect(
                lambda cursor, n: fetch(client, cursor, n),
                limit=None if all_ else limit,
                page_size=LIST_PAGE_SIZE if all_ else min(limit, LIST_PAGE_SIZE),
            )

    listing = run_async(main())
    if json_out:
        emit_json(listing.items)
    else:
        render(listing.items)
    note = more_note(listing, noun)
    if note:
        notice(note, shown=len(listing.items), total=listing.total)


def more_note(listing: Listing[Any], noun: str) -> str | None:
    """'showing 100 of 20,000 held tasks; ...' when more exist, else None."""
    if not listing.more:
        return None
    of = f" of {listing.total:,}" if listing.total is not None else ""
    return f"showing {len(listing.items):,}{of} {noun}; see more with --limit N, or all with --all"
