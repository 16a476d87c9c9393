"""Trace context when no exporter records spans: no spans are made, yet the trace id still flows
from a message's headers to the task, to outgoing headers and to log lines."""

from __future__ import annotations

import re

from common.log import add_trace_context
from common.tracing import current_span, recording
from communication.trace_context import context_from, headers_for, start_task_span

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING = {"traceparent": f"00-{PARENT_TRACE}-00f067aa0ba902b7-01"}


def test_nothing_records_spans_in_a_process_that_set_up_no_exporter() -> None:
    assert recording() is False


def test_a_task_started_under_a_requests_context_continues_its_trace() -> None:
    with current_span("claw.api.submit", context=context_from(INCOMING)):
        built: list[int] = []
        span, trace_id, traceparent = start_task_span("claw.task", lambda: built.append(1) or {})
        outgoing = headers_for()
        logged = add_trace_context(None, "info", {"event": "x"})
    assert span is None and built == []  # no span, and its attributes never built
    assert trace_id == PARENT_TRACE
    assert traceparent is not None
    match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-00", traceparent)
    assert match and match.group(1) == PARENT_TRACE and match.group(2) != "00f067aa0ba902b7"
    assert outgoing["traceparent"].split("-")[1] == PARENT_TRACE
    assert logged["trace_id"] == PARENT_TRACE


def test_a_task_submitted_without_a_context_gets_a_fresh_trace_and_the_context_is_restored() -> None:
    _, first, _ = start_task_span("claw.task", dict)
    _, second, _ = start_task_span("claw.task", dict)
    assert first and second and first != second and len(first) == 32
    with current_span("claw.task.execute", context=context_from(INCOMING)):
        pass
    assert "trace_id" not in add_trace_context(None, "info", {"event": "after"})


def test_a_task_of_a_batch_gets_a_trace_of_its_own_even_under_a_requests_context() -> None:
    with current_span("claw.api.submit", context=context_from(INCOMING)):
        _, first, _ = start_task_span("claw.task", dict, own_trace=True)
        _, second, traceparent = start_task_span("claw.task", dict, own_trace=True)
    assert first and second and len({first, second, PARENT_TRACE}) == 3
    assert traceparent is not None and traceparent.split("-")[1] == second
