"""Serving the coordinator API over NATS request/reply.

Each verb has its own queue-group subscription (coordinators share the load). A request is served in
its own task, owned by the server and awaited on shutdown, so a slow query never holds up a submit.
Errors become `ApiReply.error`: a `ClawError` keeps its code and message; bytes no decoder could
take (nested too deeply, invalid UTF-8) are `invalid_input`; anything else is logged with its
traceback (never the request's bytes) and answered as `internal`, so a client never hangs on a
failed request. Messages are cut to `MAX_ERROR_CHARS`: a client's oversized value is not echoed back.
A reply that would exceed the server's max_payload (headers included: nats-py echoes the request's on
a reply) becomes a `payload_too_large` error: the server would drop it and the client would wait in vain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import SpanKind, StatusCode

from common.api import ApiError, ApiReply
from common.errors import ClawError, InternalError, InvalidInputError, PayloadTooLargeError
from common.log import get_logger
from common.tracing import current_span
from communication.codec import DecodeError, encode
from communication.connection import NatsConnection
from communication.payload_limits import message_bytes, too_large_message
from communication.trace_context import context_from

log = get_logger("coordinator.api")

Handler = Callable[[bytes], Awaitable[msgspec.Struct]]
MAX_ERROR_CHARS = 1000


class ApiServer:
    """Subscribes the API verbs and answers them with the given handlers."""

    def __init__(self, conn: NatsConnection, handlers: dict[str, Handler]) -> None:
        self._conn = conn
        self._handlers = handlers
        self._subs: list[Subscription] = []
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start answering requests."""
        subjects = self._conn.subjects
        for verb, handler in self._handlers.items():
            sub = await self._conn.nc.subscribe(
                subjects.api(verb), queue=subjects.api_queue_group, cb=self._dispatcher(verb, handler)
            )
            self._subs.append(sub)
        # SUBs are buffered: make sure the server has them before anyone is told the API is up.
        await self._conn.nc.flush()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking requests, let those in progress finish (up to `grace_s`), cancel the rest."""
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _dispatcher(self, verb: str, handler: Handler) -> Callable[[Msg], Awaitable[None]]:
        async def dispatch(msg: Msg) -> None:
            task = asyncio.create_task(self._serve(verb, handler, msg), name=f"api.{verb}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        return dispatch

    async def _serve(self, verb: str, handler: Handler, msg: Msg) -> None:
        with current_span(f"claw.api.{verb}", context=context_from(msg.headers), kind=SpanKind.SERVER) as span:
            payload = await self._answer(verb, handler, msg)
            if payload.startswith(b'{"error"'):
                span.set_status(StatusCode.ERROR)
        if msg.reply:
            await self._respond(verb, msg, payload)

    async def _respond(self, verb: str, msg: Msg, payload: bytes) -> None:
        max_payload = self._conn.nc.max_payload
        size = message_bytes(payload, msg.headers)
        headers = msg.headers
        if size > max_payload:
            log.error("api.reply_too_large", verb=verb, bytes=size, max_payload=max_payload)
            error = PayloadTooLargeError(
                f"{too_large_message(f'the reply to {verb}', size, max_payload)}; ask for less (a smaller --limit)"
            )
            payload = encode(ApiReply(error=ApiError(error.code, str(error))))
            if message_bytes(payload, headers) > max_payload:
                headers = None  # the request's own headers were the problem
        await self._conn.nc.publish(msg.reply, payload, headers=headers)

    async def _answer(self, verb: str, handler: Handler, msg: Msg) -> bytes:
        try:
            return b'{"data":' + encode(await handler(msg.data)) + b"}"
        except DecodeError as exc:
            return _error("bad_request", f"malformed {verb} request: {exc}")
        except ClawError as exc:
            return _error(exc.code, str(exc))
        except (RecursionError, UnicodeError) as exc:
            # Bytes from the request that some decoder choked on: the client's mistake, not ours.
            log.warning("api.unreadable_request", verb=verb, error=type(exc).__name__, size=len(msg.data))
            return _error(InvalidInputError.code, f"the {verb} request could not be read: {_short(exc)}")
        except Exception as exc:
            log.exception("api.failed", verb=verb)
            error = InternalError(f"the coordinator failed on {verb}: {type(exc).__name__}: {_short(exc)}; see its log")
            return _error(error.code, str(error))


def _error(code: str, message: str) -> bytes:
    if len(message) > MAX_ERROR_CHARS:
        message = f"{message[: MAX_ERROR_CHARS - 30]}... ({len(message)} characters)"
    return encode(ApiReply(error=ApiError(code, message)))


def _short(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8 at byte {exc.start}"
    return str(exc)[:200]
