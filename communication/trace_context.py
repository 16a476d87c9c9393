"""Trace context in and out of NATS headers: the one wrapper every publish and consume goes through.

W3C `traceparent`/`tracestate` headers carry the context, so one trace follows a task from the
submit through the coordinator to every attempt on any worker (redeliveries keep the headers).
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.trace import Span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()


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
