"""Trimming a task view, a submit reply or a dead letter to fit one NATS message, and paging lists."""

from __future__ import annotations

import msgspec
import pytest

from common.api import SubmitReply, SubmitResult
from common.errors import InvalidInputError, PayloadTooLargeError
from common.models import AttemptError, DeadLetter, EventView, TaskMessage, TaskView
from common.states import Priority, TaskState
from communication.codec import encode
from coordinator.paging import offset_page, take_page
from coordinator.reply_fit import fit_dead_letter, fit_submit_reply, fit_task_view, max_submit_results

BUDGET = 64 * 1024
LOG_LINE = msgspec.Raw(b'"' + b"l" * 200 + b'"')


def view(*, events: int, input_bytes: int = 20, error: str | None = None) -> TaskView:
    return TaskView(
        task_id="01M90WKC2A5VK2WCMXCM88XXYT",
        skill="echo",
        priority=Priority.NORMAL,
        state=TaskState.FAILED,
        input=msgspec.Raw(b'{"b":"' + b"x" * (input_bytes - 8) + b'"}'),
        attempts=1,
        max_attempts=3,
        timeout_s=60.0,
        created_at=1.0,
        error_traceback=error,
        events=[
            EventView(
                id=n, at=float(n), kind="submitted" if n == 0 else "log", data=msgspec.Raw(b'"' + b"l" * 200 + b'"')
            )
            for n in range(events)
        ],
    )


def test_a_view_that_fits_is_left_as_it_is() -> None:
    small = view(events=10)
    assert fit_task_view(small, BUDGET) is small


def test_a_long_timeline_keeps_its_start_and_its_newest_events_and_says_how_many_it_left_out() -> None:
    big = view(events=2000)
    fitted = fit_task_view(big, BUDGET)
    assert len(encode(fitted)) <= BUDGET
    assert [e.id for e in fitted.events[:2]] == [0, 1]
    assert fitted.events[-1].id == 1999
    ids = [e.id for e in fitted.events]
    assert ids == sorted(ids) and fitted.events_omitted == 2000 - len(ids) > 0
    assert bytes(fitted.input) == bytes(big.input)  # small inputs stay


def test_an_oversize_input_and_traceback_are_left_out_first() -> None:
    fitted = fit_task_view(view(events=3, input_bytes=200_000, error="frame\n" * 20_000), BUDGET)
    assert bytes(fitted.input) == b'{"$omitted":{"bytes":200000}}'
    assert fitted.error_traceback is not None and len(fitted.error_traceback) <= 4001
    assert fitted.events_omitted == 0 and len(fitted.events) == 3


def test_a_huge_submit_reply_drops_why_tasks_are_held_and_the_request_size_is_capped_by_the_reply() -> None:
    most = max_submit_results(BUDGET)
    note = "held by guard rule 'risky' (write_external): needs 2 approval(s); `claw approve X`"
    held = SubmitResult(
        task_id="0" * 26, state=TaskState.WAITING_APPROVAL, duplicate=True, note=note, rule="risky", approvals_needed=2
    )
    fitted = fit_submit_reply(SubmitReply(results=[held] * most), BUDGET)
    assert len(encode(fitted)) <= BUDGET
    assert {(r.note, r.rule, r.approvals_needed) for r in fitted.results} == {("", "", 0)}
    assert fit_submit_reply(SubmitReply(results=[held] * 10), BUDGET).results[0] == held  # kept when it fits
    widest = [SubmitResult(task_id="0" * 26, state=TaskState.WAITING_APPROVAL, duplicate=True)] * most
    assert len(encode(SubmitReply(results=widest))) <= BUDGET


def test_a_dead_letter_too_big_loses_traceback_length_then_its_input() -> None:
    task = TaskMessage(
        task_id="T",
        skill="echo",
        input=msgspec.Raw(b'{"b":"' + b"x" * 50_000 + b'"}'),
        priority=Priority.NORMAL,
        timeout_s=1.0,
        max_attempts=3,
        submitted_at=1.0,
    )
    attempts = [AttemptError(attempt=n, traceback="t" * 10_000, message="m" * 5000) for n in range(1, 7)]
    letter = DeadLetter(kind="task", reason="r", dead_at=1.0, skill="echo", subject="s", task=task, attempts=attempts)
    assert len(encode(letter)) > 100_000
    shorter = fit_dead_letter(letter, 100_000)
    assert len(encode(shorter)) <= 100_000 and not shorter.input_omitted
    assert all(len(a.traceback or "") <= 4001 for a in shorter.attempts)
    smallest = fit_dead_letter(letter, 45_000)
    assert len(encode(smallest)) <= 45_000 and smallest.input_omitted
    assert smallest.task is not None and bytes(smallest.task.input).startswith(b'{"$omitted"')
    assert [a.attempt for a in smallest.attempts] == list(range(1, 7))


def test_a_page_ends_at_its_limit_or_its_byte_budget() -> None:
    items = [{"n": n, "pad": "p" * 90} for n in range(100)]
    page, more = take_page(items, limit=10, budget=10_000, what="item")
    assert len(page) == 10 and more
    page, more = take_page(items, limit=100, budget=1_000, what="item")
    assert 0 < len(page) < 10 and more and len(encode(page)) <= 1_000
    page, more = take_page(items[:5], limit=10, budget=10_000, what="item")
    assert len(page) == 5 and not more
    with pytest.raises(PayloadTooLargeError, match="the next item is"):
        take_page([{"pad": "p" * 5000}], limit=10, budget=1_000, what="item")


def test_an_offset_page_hands_out_a_cursor_until_the_end() -> None:
    items = list(range(25))
    seen: list[int] = []
    cursor: str | None = None
    while True:
        page, cursor = offset_page(items, cursor=cursor, limit=10, budget=10_000, what="n")
        seen += page
        if cursor is None:
            break
    assert seen == items
    with pytest.raises(InvalidInputError, match="not a cursor"):
        offset_page(items, cursor="abc", limit=10, budget=10_000, what="n")
