"""A fake OpenAI-compatible API: a real HTTP server on 127.0.0.1 (a free port), run in a thread.

`POST <base_url>/chat/completions` answers as `mode` says (a completion with usage, 429 with
Retry-After, 500, 400 with an OpenAI-style error, a dropped connection, or a 200 HTML page). Every request is recorded
(method, path, headers, body) so a test can check what was sent. A few more routes make it a target
for http.request: `/echo` (the request as JSON; `?status=N` sets the status), `/bytes?n=N`,
`/binary`, `/redirect` (to `/echo`, or to `?to=URL`) and `/hang` (answers only when released or stopped).

A completion's content is `reply_content`, or, when `respond` is set, what it returns for the
request's body: a test gives each prompt its own deterministic answer (an outline for an outline
prompt, a chapter for a chapter prompt) and the server stays a real HTTP server.

Like a real rate-limited API it can enforce limits (`enforce(requests=, window_s=, concurrency=)`):
a completion request beyond either is a **violation**, counted, and answered as the real API would
(`over_limit`: 429 with Retry-After, or a dropped connection). `latency_s` makes each completion take
that long. It counts what it served (`stats`): completions, tokens, 429s, drops, the most requests
in flight at once; time is scaled by the test (a 6 s window of 60 requests is 600 RPM).
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

Mode = Literal["ok", "rate_limited", "server_error", "bad_request", "drop", "html"]
HANG_LIMIT_S = 10.0
HOLD_LIMIT_S = 120.0
# How often the serving thread checks for shutdown: stop() waits up to this long.
POLL_INTERVAL_S = 0.02


@dataclass
class ServerStats:
    """What the fake API served and refused."""

    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rate_limited: int = 0  # 429s sent (injected or for a violation)
    dropped: int = 0  # connections dropped (injected or for a violation)
    violations: int = 0  # requests beyond an enforced limit
    by_kind: dict[str, int] = field(default_factory=dict)
    most_in_flight: int = 0
    # Start times (time.monotonic()) of the requests it served.
    starts: list[float] = field(default_factory=list)

    def most_in_window(self, window_s: float) -> int:
        """The most starts in any window of `window_s` seconds."""
        best, first = 0, 0
        for last, at in enumerate(self.starts):
            while self.starts[first] <= at - window_s:
                first += 1
            best = max(best, last - first + 1)
        return best


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received; header names are lowercase."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


class FakeOpenAIServer:
    """Start with `running()` (a context manager) or `start()`/`stop()`."""

    def __init__(self) -> None:
        self.mode: Mode = "ok"
        # Modes for the next requests, one each, before `mode` applies again: a test that needs
        # "the first call fails" says so here instead of racing the retry to switch `mode` back.
        self.next_modes: list[Mode] = []
        self.retry_after: str | None = "7"
        self.reply_content = "Hello from the fake model."
        # The content of an "ok" answer as a function of the request body (None: reply_content).
        self.respond: Callable[[dict[str, Any]], str] | None = None
        self.usage = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
        # The 400 answer's message; "{authorization}" is replaced by the request's Authorization header.
        self.error_message = "Invalid value for 'temperature'."
        self.requests: list[RecordedRequest] = []
        # Limits the server enforces (None: none), what it answers beyond them, and its counts.
        self.limit_requests: int | None = None
        self.limit_window_s = 60.0
        self.limit_concurrency: int | None = None
        self.over_limit: Literal["429", "drop"] = "429"
        self.latency_s = 0.0
        # Cleared: completions that were let in wait until it is set again (a test holds the API).
        self.flowing = threading.Event()
        self.flowing.set()
        self.stats = ServerStats()
        self._starts: deque[float] = deque()
        # When (time.monotonic()) it answered 429 or dropped a connection.
        self.refused_at: list[float] = []
        self._in_flight = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._serve, name="fake-openai", daemon=True)

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[FakeOpenAIServer]:
        """A started server, stopped on exit (also when the test fails)."""
        server = cls()
        server.start()
        try:
            yield server
        finally:
            server.stop()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (`.../v1`) to configure as tools.llm_base_url."""
        return f"{self.url}/v1"

    def tools(self, sandbox_root: Path, key_env: str, **extra: Any) -> dict[str, Any]:
        """The `tools` settings that point a worker's llm.chat at this server: its base URL, the API
        key read from `key_env`, and loopback allowed (the server is on 127.0.0.1); `extra` adds or
        replaces settings."""
        return {
            "sandbox_root": str(sandbox_root),
            "llm_base_url": self.base_url,
            "llm_api_key_env": key_env,
            "http_allow_private": ["127.0.0.1"],
            **extra,
        }

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=POLL_INTERVAL_S)

    def stop(self) -> None:
        """Release hanging requests, stop serving and close the socket."""
        self.release.set()
        self.flowing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def enforce(self, *, requests: int | None = None, window_s: float = 60.0, concurrency: int | None = None) -> None:
        """Enforce a rate (requests per sliding window) and a concurrency, as the real API would."""
        with self._lock:
            self.limit_requests, self.limit_window_s, self.limit_concurrency = requests, window_s, concurrency

    def admit(self) -> str | None:
        """Count a completion request's start; the violation ('rate' or 'concurrency') if it breaks a limit."""
        with self._lock:
            now = time.monotonic()
            while self._starts and self._starts[0] <= now - self.limit_window_s:
                self._starts.popleft()
            violation = None
            if self.limit_concurrency is not None and self._in_flight >= self.limit_concurrency:
                violation = "concurrency"
            elif self.limit_requests is not None and len(self._starts) >= self.limit_requests:
                violation = "rate"
            if violation is not None:
                self.stats.violations += 1
                self.stats.by_kind[violation] = self.stats.by_kind.get(violation, 0) + 1
                return violation
            self._starts.append(now)
            self.stats.starts.append(now)
            self._in_flight += 1
            self.stats.most_in_flight = max(self.stats.most_in_flight, self._in_flight)
            return None

    def finish(self, usage: dict[str, int] | None) -> None:
        """A started request ends (before its answer is sent: the client cannot see it still running)."""
        with self._lock:
            self._in_flight -= 1
            if usage is not None:
                self.stats.completions += 1
                self.stats.prompt_tokens += usage.get("prompt_tokens", 0)
                self.stats.completion_tokens += usage.get("completion_tokens", 0)

    def retry_after_s(self) -> int:
        """Seconds until the oldest start leaves the window (at least 1), for a 429's Retry-After."""
        with self._lock:
            if not self._starts:
                return 1
            return max(1, math.ceil(self._starts[0] + self.limit_window_s - time.monotonic()))

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def completions(self) -> list[RecordedRequest]:
        """The chat-completion requests received so far."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]


def _handler_for(fake: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        server_state = fake

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: FakeOpenAIServer

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests assert on recorded requests, not on the server's log."""

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = RecordedRequest(self.command, parts.path, headers, body)
        self.server_state.record(request)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            self._route(parts.path, query, request)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client stopped reading (a capped response): fine

    def _route(self, path: str, query: dict[str, str], request: RecordedRequest) -> None:
        if path.endswith("/chat/completions") and request.method == "POST":
            self._chat(request)
        elif path == "/echo":
            echo = {"method": request.method, "path": path, "headers": request.headers, "body": request.body.decode()}
            self._send(int(query.get("status", 200)), json.dumps(echo).encode(), "application/json")
        elif path == "/bytes":
            self._send(200, b"x" * int(query.get("n", 0)), "text/plain; charset=utf-8")
        elif path == "/binary":
            self._send(200, bytes(range(256)) * 4, "application/octet-stream")
        elif path == "/redirect":
            self._send(302, b"", "text/plain", {"Location": query.get("to", "/echo")})
        elif path == "/hang":
            self.server_state.release.wait(HANG_LIMIT_S)
            self._send(200, b"late", "text/plain")
        else:
            self._send(404, b'{"error": {"message": "no such route"}}', "application/json")

    def _chat(self, request: RecordedRequest) -> None:
        state = self.server_state
        with state._lock:
            mode = state.next_modes.pop(0) if state.next_modes else state.mode
        if mode == "ok":
            violation = state.admit()
            if violation is not None:
                self._refuse(violation)
                return
            usage: dict[str, int] | None = None
            try:
                state.flowing.wait(HOLD_LIMIT_S)
                if state.latency_s:
                    time.sleep(state.latency_s)
                body = _completion(state, request.json())
                usage = body["usage"]
            finally:
                state.finish(usage)
            self._send(200, json.dumps(body).encode(), "application/json")
            return
        match mode:
            case "rate_limited":
                with state._lock:
                    state.stats.rate_limited += 1
                    state.refused_at.append(time.monotonic())
                extra = {"Retry-After": state.retry_after} if state.retry_after is not None else {}
                self._send(429, _error("Rate limit reached for requests"), "application/json", extra)
            case "server_error":
                self._send(500, _error("The server had an error while processing your request."), "application/json")
            case "bad_request":
                message = state.error_message.replace("{authorization}", request.headers.get("authorization", ""))
                self._send(400, _error(message), "application/json")
            case "drop":
                with state._lock:
                    state.stats.dropped += 1
                    state.refused_at.append(time.monotonic())
                self.close_connection = True  # no answer at all: the client sees a disconnect
            case "html":
                self._send(200, b"<html>a proxy's login page</html>", "text/html")

    def _refuse(self, violation: str) -> None:
        state = self.server_state
        if state.over_limit == "drop":
            with state._lock:
                state.stats.dropped += 1
            self.close_connection = True
            return
        with state._lock:
            state.stats.rate_limited += 1
        retry_after = str(state.retry_after_s())
        self._send(429, _error(f"Rate limit reached ({violation})"), "application/json", {"Retry-After": retry_after})

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _completion(state: FakeOpenAIServer, request: dict[str, Any]) -> dict[str, Any]:
    content = state.respond(request) if state.respond is not None else state.reply_content
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": f"{request.get('model')}-0001",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": state.usage,
    }


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
