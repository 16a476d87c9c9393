"""A stand-in OTLP/HTTP trace collector for `claw bench --tracing`: counts spans, keeps nothing.

Run as its own process (`python -m cli.bench.span_sink PORT_FILE`) so that decoding the exported
spans, which a real collector does on its own machine, is not charged to the processes measured.
It writes its port to PORT_FILE once it listens; `GET /count` answers
`{"requests": N, "spans": M, "by_process": {"claw-worker host:pid": K, ...}}` (by the resource's
service.name and service.instance.id: a process whose spans are missing is named).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue


class SpanCounter:
    """Spans and requests received (requests arrive on several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.spans = 0
        self.by_process: dict[str, int] = {}

    def add(self, request: ExportTraceServiceRequest) -> None:
        """Count one export request."""
        with self._lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                spans = sum(len(scope.spans) for scope in resource_spans.scope_spans)
                self.spans += spans
                process = _process_name(resource_spans.resource.attributes)
                self.by_process[process] = self.by_process.get(process, 0) + spans

    def as_json(self) -> bytes:
        """The counts, as `GET /count` answers them."""
        with self._lock:
            return json.dumps(
                {"requests": self.requests, "spans": self.spans, "by_process": dict(self.by_process)}
            ).encode()


def _process_name(attributes: Iterable[KeyValue]) -> str:
    values = {a.key: a.value.string_value for a in attributes}
    return f"{values.get('service.name', '?')} {values.get('service.instance.id', '?')}"


def make_handler(counter: SpanCounter) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to `counter`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            counter.add(request)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            body = counter.as_json()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: one line per export would be most of the benchmark's log."""

    return Handler


def main(argv: list[str]) -> int:
    """Serve on a free loopback port until killed; the port goes to the file named by argv[0]."""
    if len(argv) != 1:
        sys.stderr.write("usage: python -m cli.bench.span_sink PORT_FILE\n")
        return 2
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(SpanCounter()))
    Path(argv[0]).write_text(str(server.server_address[1]))
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
