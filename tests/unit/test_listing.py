"""Collecting pages on the client, the CLI's "showing N of M" note, and attempts shown per series."""

from __future__ import annotations

import msgspec
import pytest

from cli.commands.task import render_task
from cli.listing import more_note
from cli.task_text import attempts_text
from common.models import AttemptView, TaskView
from common.states import AttemptState, Priority, TaskState
from communication.pages import Listing, Page, collect, iterate


class NumberList:
    """A list served in pages of at most `server_max` items (as a coordinator trims to fit)."""

    def __init__(self, size: int, server_max: int) -> None:
        self.items = list(range(size))
        self.server_max = server_max
        self.requests = 0

    async def fetch(self, cursor: str | None, limit: int) -> Page[int]:
        self.requests += 1
        start = 0 if cursor is None else int(cursor)
        page = self.items[start : start + min(limit, self.server_max)]
        end = start + len(page)
        return Page(page, str(end) if end < len(self.items) else None, len(self.items) if cursor is None else None)


async def test_collect_fetches_pages_up_to_the_limit_and_says_more_exist() -> None:
    numbers = NumberList(20_000, server_max=700)
    listing = await collect(numbers.fetch, limit=100, page_size=1000)
    assert listing == Listing(list(range(100)), True, 20_000) and numbers.requests == 1
    listing = await collect(numbers.fetch, limit=1500, page_size=1000)
    assert listing.items == list(range(1500)) and listing.more and numbers.requests == 1 + 3
    everything = await collect(numbers.fetch, limit=None, page_size=1000)
    assert everything.items == numbers.items and not everything.more
    assert [n async for n in iterate(numbers.fetch, page_size=1000)] == numbers.items


def test_the_note_says_how_many_of_how_many() -> None:
    assert more_note(Listing([1] * 100, True, 20_000), "held tasks") == (
        "showing 100 of 20,000 held tasks; see more with --limit N, or all with --all"
    )
    assert more_note(Listing([1] * 3, False, 3), "tasks") is None
    assert more_note(Listing([1] * 3, True, None), "dead letters") == (
        "showing 3 dead letters; see more with --limit N, or all with --all"
    )


def replayed_view() -> TaskView:
    return TaskView(
        task_id="01M90WKC2A5VK2WCMXCM88XXYT",
        skill="flaky",
        priority=Priority.NORMAL,
        state=TaskState.DEAD,
        input=msgspec.Raw(b"{}"),
        attempts=6,
        max_attempts=3,
        timeout_s=60.0,
        created_at=1.0,
        attempt_offset=3,
        series=2,
        attempt_log=[
            AttemptView(attempt=n, node_id="w1", state=AttemptState.FAILED, series=1 if n <= 3 else 2)
            for n in range(1, 7)
        ],
    )


def test_attempts_are_shown_per_series_once_a_task_was_re_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert attempts_text(replayed_view()) == "attempt 3 of 3 (series 2; 6 in all)"
    first = msgspec.structs.replace(replayed_view(), attempts=2, attempt_offset=0, series=1)
    assert attempts_text(first) == "2 of 3"
    render_task(replayed_view())
    out = capsys.readouterr().out
    assert "attempts         attempt 3 of 3 (series 2; 6 in all)" in out
    assert "dead on attempt 3 of 3 (series 2; 6 in all)" in out
    assert "6 of 3" not in out and "4 (series 2)" in out
