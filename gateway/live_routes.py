"""The live endpoints: `GET /v1/tasks/{task_id}/events` (Server-Sent Events) and `/v1/live` (WebSocket).

SSE: each event-log row is one message whose `id` is the row's id and whose data is the row
(`EventView` JSON); a client that reconnects sends `Last-Event-ID` (browsers do by themselves; or
`?last_event_id=`) and gets the rows after it, each once. When the task has ended the stream sends
`event: end` with its final state and closes. Comments (`: keep-alive`) keep idle proxies open.

WebSocket: the client sends `{"op": "subscribe", "topic": "task", "task_id": ID, "after": N}`,
`{"op": "subscribe", "topic": "tasks"}` (every task's feed: states and progress, for lists) or
`{"op": "subscribe", "topic": "overview"}` (the cluster status), and `unsubscribe` likewise; it gets
`{"topic": "task", "task_id": ID, "event": {...}}` (then `"end": STATE`), `{"topic": "tasks",
"feed": {...}}` and `{"topic": "overview", "status": {...}}`. A client too slow to read is
disconnected rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from common import api, verbs
from common.errors import ClawError, InvalidInputError
from common.models import ClusterStatus, EventView, TaskFeed, TaskView
from common.states import TERMINAL_STATES, TaskState
from gateway.context import Caller, Gateway
from gateway.live import LiveHub

# Messages a WebSocket client may have waiting before it is disconnected as too slow.
WS_QUEUE_MAX = 10_000
# WebSocket close codes (4000-4999 are the application's).
WS_UNAUTHENTICATED, WS_FORBIDDEN, WS_TOO_SLOW = 4401, 4403, 4429


class ClientMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a WebSocket client sends: subscribe to or unsubscribe from a topic."""

    op: str
    topic: str
    task_id: str | None = None
    after: int = 0


class TaskMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An event of a subscribed task, or its end."""

    topic: str  # "task" (required: omit_defaults would leave it out)
    task_id: str
    event: EventView | None = None
    end: TaskState | None = None


class TasksMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A task's log grew (the `tasks` topic)."""

    topic: str = "tasks"
    feed: TaskFeed


class OverviewMessage(msgspec.Struct, frozen=True, kw_only=True):
    """The cluster's status (the `overview` topic)."""

    topic: str = "overview"
    status: ClusterStatus


class ErrorMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A subscription was refused."""

    error: dict[str, str]
    topic: str | None = None
    task_id: str | None = None


def last_event_id(request: Request) -> int:
    """Where an SSE stream resumes: `Last-Event-ID`, or `?last_event_id=`, else from the start."""
    text = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "0"
    if not text.isdigit():
        raise InvalidInputError(f"Last-Event-ID {text!r} is not an event id (a whole number)")
    return int(text)


def _sse(item: EventView | TaskView) -> bytes:
    if isinstance(item, EventView):
        return b"id: %d\ndata: %s\n\n" % (item.id, msgspec.json.encode(item))
    if item.state in TERMINAL_STATES:
        end = msgspec.json.encode({"task_id": item.task_id, "state": item.state})
        return b"event: end\ndata: %s\n\n" % end
    return b": keep-alive\n\n"


def live_routes(gw: Gateway, hub: LiveHub) -> list[BaseRoute]:
    """The SSE and WebSocket routes."""

    async def task_events(request: Request) -> Response:
        caller = await gw.authenticate(request)
        task_id, after = request.path_params["task_id"], last_event_id(request)
        # Unknown tasks and refused callers get a JSON error, not an empty stream.
        await gw.calls.call(caller.principal, verbs.TASK_GET, api.TaskGetRequest(task_id=task_id, history=False))

        async def stream() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            async for item in hub.task_events(task_id, after):
                yield _sse(item)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def live(ws: WebSocket) -> None:
        # Refusals are sent after the handshake, as close codes a client can read (before it, a
        # browser sees only a failed connection).
        await ws.accept()
        try:
            caller = await gw.authenticate(ws)
        except ClawError as exc:
            await ws.close(WS_UNAUTHENTICATED, str(exc)[:120])
            return
        if caller.session is not None and not _same_origin(ws, gw.settings.cors_origins):
            # A page of another site must not use a logged-in browser's cookie (cross-site WebSocket).
            await ws.close(WS_FORBIDDEN, "origin not allowed")
            return
        await LiveSocket(ws, gw, hub, caller).serve()

    return [
        Route("/v1/tasks/{task_id}/events", task_events, methods=["GET"]),
        WebSocketRoute("/v1/live", live),
    ]


def _same_origin(ws: WebSocket, allowed: list[str]) -> bool:
    origin = ws.headers.get("origin")
    if origin is None:
        return True  # not a browser
    host = ws.headers.get("host", "")
    return origin in allowed or origin.split("://", 1)[-1] == host


class LiveSocket:
    """One WebSocket connection: its subscriptions (each a task of its own) and its outgoing queue."""

    def __init__(self, ws: WebSocket, gw: Gateway, hub: LiveHub, caller: Caller) -> None:
        self.ws, self.gw, self.hub, self.caller = ws, gw, hub, caller
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(WS_QUEUE_MAX)
        self.subscriptions: dict[tuple[str, str | None], asyncio.Task[None]] = {}
        self.too_slow = asyncio.Event()

    async def serve(self) -> None:
        """Read the client's messages and send what its subscriptions produce, until it goes (or
        reads too slowly)."""
        sender = asyncio.create_task(self._send_loop(), name="ws-send")
        receiver = asyncio.create_task(self._receive_loop(), name="ws-receive")
        slow = asyncio.create_task(self.too_slow.wait(), name="ws-slow")
        try:
            await asyncio.wait({sender, receiver, slow}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks = [sender, receiver, slow, *self.subscriptions.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.too_slow.is_set():
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await self.ws.close(WS_TOO_SLOW, "too slow to read its messages")

    async def _receive_loop(self) -> None:
        while True:
            try:
                raw = await self.ws.receive_text()
            except (WebSocketDisconnect, KeyError, RuntimeError):
                return  # gone (KeyError: it sent bytes, not text)
            await self._handle(raw)

    async def _send_loop(self) -> None:
        while True:
            data = await self.queue.get()
            try:
                await self.ws.send_text(data.decode())
            except (WebSocketDisconnect, RuntimeError):
                return

    def put(self, value: Any) -> None:
        """Queue a message; a client that lets the queue fill is disconnected."""
        try:
            self.queue.put_nowait(msgspec.json.encode(value))
        except asyncio.QueueFull:
            self.too_slow.set()

    async def _handle(self, raw: str) -> None:
        try:
            message = msgspec.json.decode(raw, type=ClientMessage)
        except msgspec.DecodeError as exc:
            self.put(ErrorMessage(error={"code": "invalid_input", "message": f"invalid message: {exc}"}))
            return
        key = (message.topic, message.task_id)
        if message.op == "unsubscribe":
            task = self.subscriptions.pop(key, None)
            if task is not None:
                task.cancel()
            return
        if message.op != "subscribe" or message.topic not in ("task", "tasks", "overview"):
            error = {"code": "invalid_input", "message": "op is subscribe|unsubscribe; topic is task|tasks|overview"}
            self.put(ErrorMessage(error=error, topic=message.topic))
            return
        if key in self.subscriptions:
            return
        try:
            await self._check(message)
        except ClawError as exc:
            self.put(ErrorMessage(error={"code": exc.code, "message": str(exc)}, topic=message.topic,
                                  task_id=message.task_id))  # fmt: skip
            return
        self.subscriptions[key] = asyncio.create_task(self._run(message), name=f"ws-{message.topic}")

    async def _check(self, message: ClientMessage) -> None:
        principal = self.caller.principal
        if message.topic == "task":
            if not message.task_id:
                raise InvalidInputError("a task subscription needs a task_id")
            request = api.TaskGetRequest(task_id=message.task_id, history=False)
            await self.gw.calls.call(principal, verbs.TASK_GET, request)
        else:
            self.gw.calls.check(principal, verbs.STATUS if message.topic == "overview" else verbs.TASK_LIST)

    async def _run(self, message: ClientMessage) -> None:
        if message.topic == "task":
            assert message.task_id is not None
            async for item in self.hub.task_events(message.task_id, message.after):
                if isinstance(item, EventView):
                    self.put(TaskMessage(topic="task", task_id=message.task_id, event=item))
                elif item.state in TERMINAL_STATES:
                    self.put(TaskMessage(topic="task", task_id=message.task_id, end=item.state))
            return
        forever = asyncio.Event()
        if message.topic == "tasks" and self.caller.principal.tenant is not None:
            await self._tenant_feed()
        elif message.topic == "tasks":
            async with self.hub.every_task(lambda feed: self.put(TasksMessage(feed=feed))):
                await forever.wait()
        else:
            async with self.hub.overview_updates(lambda reply: self.put(OverviewMessage(status=reply.status))):
                await forever.wait()

    async def _tenant_feed(self) -> None:
        """The `tasks` topic for a tenant's key: only its tenant's tasks (each task looked up once)."""
        feeds: asyncio.Queue[TaskFeed] = asyncio.Queue(WS_QUEUE_MAX)

        def arrived(feed: TaskFeed) -> None:
            try:
                feeds.put_nowait(feed)
            except asyncio.QueueFull:
                self.too_slow.set()

        owned: dict[str, bool] = {}
        async with self.hub.every_task(arrived):
            while True:
                feed = await feeds.get()
                mine = owned.get(feed.task_id)
                if mine is None:
                    try:
                        mine = await self.gw.calls.owns(self.caller.principal, feed.task_id)
                    except ClawError:
                        continue  # not known now (coordinator away): left out, the task page still shows it
                    if len(owned) > 10_000:
                        owned.clear()
                    owned[feed.task_id] = mine
                if mine:
                    self.put(TasksMessage(feed=feed))
