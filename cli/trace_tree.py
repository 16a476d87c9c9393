"""`claw task trace`: a task's spans as a tree, read from the files of the `jsonl` traces exporter.

For offline debugging without a tracing backend: every process appends its spans to a file
(`OTEL_TRACES_EXPORTER=jsonl`, `CLAW_TRACING_JSONL_PATH`); this joins them by trace id and prints
who called whom, how long each step took, and each attempt's outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

from common.errors import ConfigError

# The span attributes worth a glance in a tree line, in this order.
SHOWN_ATTRIBUTES = ("claw.attempt", "claw.node_id", "claw.outcome")


class SpanLink(msgspec.Struct, frozen=True):
    """A span another span points to without being its child (a batch's submit request)."""

    trace_id: str
    span_id: str


class SpanLine(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of an exported span that the tree needs (the jsonl record holds more)."""

    name: str
    service: str | None = None
    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    start_ns: int
    end_ns: int
    status: str = "UNSET"
    attributes: dict[str, object] = {}
    links: list[SpanLink] = []


def load_spans(paths: Iterable[Path], trace_id: str) -> list[SpanLine]:
    """The spans of `trace_id` in these files; a line that is not a span is an error naming it."""
    decoder = msgspec.json.Decoder(SpanLine)
    found: list[SpanLine] = []
    for path in paths:
        try:
            lines = path.read_bytes().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read spans from {path}: {exc.strerror}") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                span = decoder.decode(line)
            except msgspec.DecodeError as exc:
                raise ConfigError(f"{path}:{number} is not a span of the jsonl exporter: {exc}") from None
            if span.trace_id == trace_id:
                found.append(span)
    return found


def span_tree(spans: list[SpanLine]) -> list[str]:
    """Indented lines, parents before children, siblings by start time; orphans (their parent is in
    a file not given) are shown as roots."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanLine]] = {}
    for span in spans:
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []
    origin = min((s.start_ns for s in spans), default=0)

    def walk(span: SpanLine, depth: int) -> None:
        # The offset from the trace's start shows the waits between spans (queue, retry backoff).
        at_ms = (span.start_ns - origin) / 1e6
        took_ms = (span.end_ns - span.start_ns) / 1e6
        shown = " ".join(
            f"{k.removeprefix('claw.')}={span.attributes[k]}" for k in SHOWN_ATTRIBUTES if k in span.attributes
        )
        error = " ERROR" if span.status == "ERROR" else ""
        line = f"{'  ' * depth}{span.service or '?'}: {span.name} at +{at_ms:.1f} ms, took {took_ms:.1f} ms{error}"
        lines.append(f"{line} {shown}".rstrip())
        for link in span.links:
            # A task of a batch: its trace starts here, the batch's request is in another trace.
            lines.append(f"{'  ' * (depth + 1)}(linked to span {link.span_id} of trace {link.trace_id})")
        for child in sorted(children.get(span.span_id, []), key=lambda s: s.start_ns):
            walk(child, depth + 1)

    for root in sorted(children.get(None, []), key=lambda s: s.start_ns):
        walk(root, 0)
    return lines
