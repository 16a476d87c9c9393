"""Trace context in and out of NATS headers: the one wrapper every publish and consume goes through.

W3C `traceparent`/`tracestate` headers carry the context, so one trace follows a task from the
submit through the coordinator to every attempt on any worker (redeliveries keep the headers).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from common.tracing import recording, trace_id_of, tracer

_propagator = TraceContextTextMapPropagator()
_ids = random.Random()


def headers_for(span: Span | None = None, headers: dict[str, str] | None = None) -> dict[str, str]:
    """`headers` (or a new dict) with the trace context of `span` (or the current one) added."""
    carrier = {} if headers is None else headers
    _propagator.inject(carrier, context=None if span is None else set_span_in_context(span))
    return carrier


def context_from(headers: Mapping[str, str] | None) -> Context:
    """The trace context carried by a message's headers (empty if none)."""
    return _propagator.extract(dict(headers or {}))


def traceparent_of(span: Span) -> str | None:
    """The `traceparent` header value for a span (what a task keeps to continue its trace later)."""
    return headers_for(span).get("traceparent")


def start_task_span(
    name: str, attributes: Callable[[], Attributes], *, own_trace: bool = False
) -> tuple[Span | None, str | None, str | None]:
    """Start the span a task's attempts hang under: (the span to end later, trace id, traceparent).

    The task continues the current trace (its submit request), or with `own_trace` starts a trace
    of its own whose first span links to the request's span: the tasks of a batch are then traced,
    sampled and shown one by one, not as one trace of thousands of spans.

    When spans are not recorded, no span is made (None): the ids are drawn directly, and
    `attributes` is not even built.
    """
    caller = trace.get_current_span().get_span_context()
    if recording():
        span = tracer().start_span(
            name,
            context=Context() if own_trace else None,  # an empty context: no parent, a new trace
            kind=SpanKind.PRODUCER,
            attributes=attributes(),
            links=[Link(caller)] if own_trace and caller.is_valid else None,
        )
        return span, trace_id_of(span), traceparent_of(span)
    trace_id = caller.trace_id if caller.is_valid and not own_trace else _ids.getrandbits(128) or 1
    span_id = _ids.getrandbits(64) or 1
    return None, f"{trace_id:032x}", f"00-{trace_id:032x}-{span_id:016x}-00"
