"""OpenTelemetry tracing: one set-up per process, configured the way OTel users expect.

`setup_tracing("claw-worker", settings)` installs the process's tracer provider. The exporter comes
from the `tracing` config section or, when that is unset, from OTel's own environment variables:

| `OTEL_TRACES_EXPORTER` | where spans go |
| --- | --- |
| `none` (default) | nowhere; trace ids are still made and stored on tasks |
| `console` | stdout, one JSON document per span |
| `otlp` | an OTLP/HTTP collector (Jaeger, Tempo, the OTel Collector), `OTEL_EXPORTER_OTLP_*`; `[otel]` extra |
| `jsonl` | ours: a JSON line per span in `tracing.jsonl_path` (or `CLAW_TRACING_JSONL_PATH`), for tests |

`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` are honoured. With no exporter, spans are not
recorded (the sampler is off), which keeps tracing nearly free while the ids still propagate. A
process that records follows a caller whose context says sampled, and otherwise samples by its own
`sample_ratio`: a caller that records nothing does not switch tracing off for the cluster.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import Attributes

from common.config import TracingSettings
from common.errors import ConfigError

EXPORTERS = ("none", "console", "otlp", "jsonl")
TRACER_NAME = "openclaw-cluster"
_encoder = msgspec.json.Encoder()


# A proxy: it forwards to the provider `setup_tracing` installs, whenever that happens. Kept once,
# because `trace.get_tracer` builds a new tracer on every call (~5 % of a busy coordinator's CPU).
_TRACER = trace.get_tracer(TRACER_NAME)
# Whether spans are recorded (an exporter other than `none` is installed). When they are not, the
# per-task paths make no spans at all and only pass the trace context on (`current_span`): trace
# ids still reach tasks, messages and log lines, for a fraction of the cost of non-recording spans.
_recording = False


def tracer() -> trace.Tracer:
    """The project's tracer (a no-op until `setup_tracing` ran)."""
    return _TRACER


def recording() -> bool:
    """Whether this process records and exports spans."""
    return _recording


@contextlib.contextmanager
def current_span(
    name: str,
    *,
    context: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
) -> Iterator[Span]:
    """A new current span (child of `context`, else of the current span) when spans are recorded.

    When they are not, the parent itself is made current: log lines still carry its trace id, and
    the span yielded accepts attributes and a status without keeping them.
    """
    if _recording:
        with _TRACER.start_as_current_span(name, context=context, kind=kind, attributes=attributes) as span:
            yield span
        return
    parent = trace.get_current_span(context)
    token = otel_context.attach(trace.set_span_in_context(parent, context))
    try:
        yield parent
    finally:
        otel_context.detach(token)


class JsonlSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line to a file (safe across threads)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - closed by shutdown()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the spans and flush."""
        lines = b"".join(_encoder.encode(span_record(s)) + b"\n" for s in spans)
        with self._lock:
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A span as the jsonl exporter writes it."""
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "trace_id": f"{context.trace_id:032x}" if context else None,
        "span_id": f"{context.span_id:016x}" if context else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in span.links
        ],
    }


class TracingHandle:
    """The installed provider; `shutdown()` flushes what is buffered."""

    def __init__(self, provider: TracerProvider, exporter_name: str) -> None:
        self.provider = provider
        self.exporter_name = exporter_name

    def shutdown(self) -> None:
        """Export what is left and stop."""
        self.provider.shutdown()


def setup_tracing(
    service_name: str, settings: TracingSettings, *, env: Mapping[str, str] | None = None
) -> TracingHandle:
    """Install the tracer provider for this process (call once, from the CLI entry point)."""
    env = os.environ if env is None else env
    name = settings.exporter or env.get("OTEL_TRACES_EXPORTER", "none").split(",")[0].strip().lower() or "none"
    if name not in EXPORTERS:
        raise ConfigError(
            f"unknown traces exporter '{name}' (OTEL_TRACES_EXPORTER / tracing.exporter): "
            f"use one of {', '.join(EXPORTERS)}"
        )
    resource = Resource.create(_resource_attributes(service_name, env))
    sampler = ALWAYS_OFF if name == "none" else _sampler(settings.sample_ratio)
    provider = TracerProvider(resource=resource, sampler=sampler)
    exporter = _exporter(name, settings, env)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    global _recording
    _recording = name != "none"
    return TracingHandle(provider, name)


def _resource_attributes(service_name: str, env: Mapping[str, str]) -> dict[str, str]:
    """service.name, and service.instance.id (host:pid) so that a collector can tell the processes
    of one service apart (two workers of one machine send the same service.name). Values the user
    set in OTEL_RESOURCE_ATTRIBUTES win: Resource.create would let ours override theirs."""
    attributes = {"service.name": env.get("OTEL_SERVICE_NAME") or service_name}
    if "service.instance.id=" not in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes["service.instance.id"] = f"{socket.gethostname()}:{os.getpid()}"
    return attributes


def _sampler(ratio: float) -> ParentBased:
    """Follow a caller that samples; otherwise decide by this process's own ratio.

    A process that records nothing (a plain `claw submit`) still sends its context, flagged not
    sampled; obeying that flag would switch tracing off for the whole cluster. The ratio sampler
    decides from the trace id alone, so every process with the same ratio decides the same way for
    one trace: a task is traced everywhere or nowhere.
    """
    own = TraceIdRatioBased(ratio)
    return ParentBased(own, remote_parent_not_sampled=own)


def _exporter(name: str, settings: TracingSettings, env: Mapping[str, str]) -> SpanExporter | None:
    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "jsonl":
        path = settings.jsonl_path or env.get("CLAW_TRACING_JSONL_PATH")
        if not path:
            raise ConfigError("the jsonl traces exporter needs tracing.jsonl_path (or CLAW_TRACING_JSONL_PATH)")
        return JsonlSpanExporter(Path(path))
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError("the otlp traces exporter is not installed: pip install 'openclaw-cluster[otel]'") from None
    return OTLPSpanExporter()  # endpoint, headers and timeout from the OTEL_EXPORTER_OTLP_* variables


def trace_id_of(span: trace.Span) -> str | None:
    """The span's trace id as 32 hex digits, or None for an invalid (no-op) span."""
    context = span.get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None
