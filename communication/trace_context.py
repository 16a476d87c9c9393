"""Trace context in and out of NATS headers: the one wrapper every publish and consume goes through.

W3C `traceparent`/`tracestate` headers carry the context, so one trace follows a task from the
submit through the coordinator to every attempt on any worker (redeliveries keep the headers).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, set_span_in_context
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


def start_task_span(name: str, attributes: Callable[[], Attributes]) -> tuple[Span | None, str | None, str | None]:
    """Start the span a task's attempts hang under: (the span to end later, trace id, traceparent).

    When spans are not recorded, no span is made (None): the ids are drawn directly, continuing the
    current trace, and `attributes` is not even built.
    """
    if recording():
        span = tracer().start_span(name, kind=SpanKind.PRODUCER, attributes=attributes())
        return span, trace_id_of(span), traceparent_of(span)
    parent = trace.get_current_span().get_span_context()
    trace_id = parent.trace_id if parent.is_valid else _ids.getrandbits(128) or 1
    span_id = _ids.getrandbits(64) or 1
    return None, f"{trace_id:032x}", f"00-{trace_id:032x}-{span_id:016x}-00"
