"""Serving the coordinator API over NATS request/reply: everything a verb's handler does not do.

Each verb has its own queue-group subscription (coordinators share the load). A request is served in
its own task, owned by the server and awaited on shutdown, so a slow query never holds up a submit.
The server decodes the request into the verb's Struct (`decode_request`: a malformed one is
`invalid_input`), answers `not_found` at once for a `task_id` longer than any task's (without echoing
it whole), calls the handler (`coordinator/api_routes.py`), trims the reply with the route's `fit`,
and wraps it in an `ApiReply`, all inside one `claw.api.<verb>` span.

Before the handler, the request's sender is known from its subject (`<prefix>.api.<identity>.<verb>`,
bound to the sender's credentials by the server's permissions); the `Authorizer` refuses a verb the
identity has no role for (`forbidden`, one line naming the role), and the request's actor fields
(`by`, `submitter`) are set to that identity whatever they said. A gateway (`auth.gateways`) acts for
the person it authenticated: its request names them (`Claw-Acting-For`) and carries the credential
they presented (`Claw-Acting-Credential`), which is checked here (coordinator/acting_proof.py); the
request is then theirs, with the roles of that credential's record (at most the gateway's own) and
its tenant. A request acting for a tenant's person is held to that tenant's tasks here too, by the
same rules the gateway applies (coordinator/tenants/scope.py): another tenant's task is `not_found`,
a verb reaching beyond one tenant is `forbidden`, lists are filtered; each refusal is logged as
`security.tenant_refused`. The credential is never logged nor sent back (the reply echoes the
request's other headers).

Errors become `ApiReply.error`: a `ClawError` keeps its code and message; bytes no decoder could
take (nested too deeply, invalid UTF-8) are `invalid_input`; anything else is logged with its
traceback (never the request's bytes) and answered as `internal`, so a client never hangs on a
failed request. Messages are cut to `MAX_ERROR_CHARS`: a client's oversized value is not echoed back.
A reply that would exceed the server's max_payload (headers included: nats-py echoes the request's on
a reply) becomes a `payload_too_large` error: the server would drop it and the client would wait in vain.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import SpanKind, StatusCode

from common.api import ApiError, ApiReply, SubmitRequest
from common.errors import (
    ClawError,
    InternalError,
    InvalidInputError,
    PayloadTooLargeError,
    PermissionDeniedError,
    TaskNotFoundError,
)
from common.ids import SHOWN_ID_CHARS, shown_id
from common.log import get_logger
from common.tracing import current_span
from common.verbs import Role, Verb
from communication.api_client import ActingFor
from communication.codec import DecodeError, decode_request, encode
from communication.connection import NatsConnection
from communication.payload_limits import message_bytes, reply_budget, too_large_message
from communication.subjects import Header
from communication.trace_context import context_from
from coordinator.acting_proof import ActingProof
from coordinator.api_routes import ApiRoutes, Route
from coordinator.authorization import Authorizer
from coordinator.tenants.identity import Caller, tenant_of_submit
from coordinator.tenants.scope import TenantScope

log = get_logger("coordinator.api")

MAX_ERROR_CHARS = 1000


class ApiServer:
    """Subscribes the API verbs and answers them with the handlers of `routes`."""

    def __init__(
        self, conn: NatsConnection, routes: ApiRoutes, authorizer: Authorizer, proof: ActingProof | None = None
    ) -> None:
        self._conn = conn
        # Checks the credential a gateway forwards for a person (None: no gateway may act for anyone).
        self._proof = proof
        self._routes = routes
        self._authorizer = authorizer
        self._subs: list[Subscription] = []
        self._inflight: set[asyncio.Task[None]] = set()
        # The tenant rules for a gateway's tenant person, reading tasks through the handlers here.
        self._tenants = TenantScope(_Handlers(routes))

    async def start(self) -> None:
        """Start answering requests; refuses to unless every declared verb has its handler."""
        self._routes.check_complete()
        subjects = self._conn.subjects
        for route in self._routes:
            sub = await self._conn.nc.subscribe(
                subjects.api_verb(route.verb.name), queue=subjects.api_queue_group, cb=self._dispatcher(route)
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

    def _dispatcher(self, route: Route) -> Callable[[Msg], Awaitable[None]]:
        async def dispatch(msg: Msg) -> None:
            task = asyncio.create_task(self._serve(route, msg), name=f"api.{route.verb.name}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        return dispatch

    async def _serve(self, route: Route, msg: Msg) -> None:
        verb = route.verb.name
        with current_span(f"claw.api.{verb}", context=context_from(msg.headers), kind=SpanKind.SERVER) as span:
            payload = await self._answer(route, msg)
            if payload.startswith(b'{"error"'):
                span.set_status(StatusCode.ERROR)
        if msg.reply:
            await self._respond(verb, msg, payload)

    async def _respond(self, verb: str, msg: Msg, payload: bytes) -> None:
        max_payload = self._conn.nc.max_payload
        headers = msg.headers
        if headers and Header.ACTING_CREDENTIAL in headers:
            # The reply echoes the request's headers (its trace context): never the person's credential.
            headers = {name: value for name, value in headers.items() if name != Header.ACTING_CREDENTIAL}
        size = message_bytes(payload, headers)
        if size > max_payload:
            log.error("api.reply_too_large", verb=verb, bytes=size, max_payload=max_payload)
            error = PayloadTooLargeError(
                f"{too_large_message(f'the reply to {verb}', size, max_payload)}; ask for less (a smaller --limit)"
            )
            payload = encode(ApiReply(error=ApiError(error.code, str(error))))
            if message_bytes(payload, headers) > max_payload:
                headers = None  # the request's own headers were the problem
        await self._conn.nc.publish(msg.reply, payload, headers=headers)

    async def _bound_to_tenant(self, request: SubmitRequest, identity: str) -> SubmitRequest:
        """The submit as the tenant its sender is bound to (if any): a tenant named in the request is
        never believed over the credentials (coordinator/tenants/identity.py refuses another)."""
        tenant = await self._authorizer.tenant_of(identity)
        if tenant is None:
            return request
        return msgspec.structs.replace(request, tenant=tenant_of_submit(request, Caller(tenant=tenant)))

    async def _in_tenant(self, acting: ActingFor, route: Route, request: Any, *, via: str) -> Any:
        """The request as a tenant's person may send it (coordinator/tenants/scope.py), or a refusal
        logged as a security event: whoever asked, the gateway should have refused it first."""
        tenant = acting.tenant or ""  # set: only a tenant's person gets here
        try:
            return await self._tenants.before(tenant, acting, route.verb, request)
        except (TaskNotFoundError, PermissionDeniedError, InvalidInputError) as exc:
            log.warning("security.tenant_refused", identity=via, acting_for=acting.name, tenant=acting.tenant,
                        verb=route.verb.name, task_id=getattr(request, "task_id", None), error=exc.code)  # fmt: skip
            raise

    async def _acting(self, gateway: str, named: str, credential: str | None, verb: Verb[Any, Any]) -> ActingFor:
        """The person a gateway's request acts for, proven by the credential it forwarded, with their
        tenant; `PermissionDeniedError` unless `gateway` may act for others and the proof holds."""
        self._authorizer.check_gateway(gateway, named, verb)
        if self._proof is None:
            raise PermissionDeniedError("this coordinator takes no request acting for someone else")
        holder = await self._proof.person(gateway, named, credential, verb)
        await self._authorizer.check_acting(gateway, holder.name, holder.roles, verb)
        tenant = await self._authorizer.acting_tenant(gateway, holder.name, holder.tenant, verb)
        return ActingFor(holder.name, tenant)

    async def _answer(self, route: Route, msg: Msg) -> bytes:
        verb = route.verb.name
        try:
            identity = _identity(msg.subject)
            headers = msg.headers or {}
            acting_for = headers.get(Header.ACTING_FOR)
            acting: ActingFor | None = None
            if acting_for is None:
                await self._authorizer.check(identity, route.verb)
            else:  # a gateway acting for a person it authenticated (docs/Gateway.md)
                gateway = identity
                person = await self._acting(gateway, acting_for, headers.get(Header.ACTING_CREDENTIAL), route.verb)
                identity = person.name
                # A tenant's person is held to their tenant's tasks; a person of every tenant is not.
                acting = person if person.tenant is not None else None
            request = _as_sent_by(_request(route.verb, msg.data), identity)
            if acting is not None:
                request = await self._in_tenant(acting, route, request, via=gateway)
            if route.verb.role == Role.WORKER and not self._authorizer.open_bus:
                # A worker's identity is its node id (`claw creds` binds them): it asks for permits and
                # gives them back as that node, whatever node the request names.
                request = msgspec.structs.replace(request, node_id=identity)
            if isinstance(request, SubmitRequest):
                request = await self._bound_to_tenant(request, identity)
            reply = await route.handler(request)
            if acting is not None and acting.tenant is not None:
                reply = await self._tenants.after(acting.tenant, acting, route.verb, reply)
            if route.fit is not None:
                reply = route.fit(reply, reply_budget(self._conn.nc.max_payload))
            return b'{"data":' + encode(reply) + b"}"
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


class _Handlers:
    """The coordinator's own handlers behind the tenant rules' `call` (no request leaves the process)."""

    def __init__(self, routes: ApiRoutes) -> None:
        self._by_name = {route.verb.name: route for route in routes}

    async def call(self, verb: Verb[Any, Any], request: Any, *, acting_for: ActingFor | None = None) -> Any:
        """Answer `request` with `verb`'s handler."""
        return await self._by_name[verb.name].handler(request)


def _request(verb: Verb[Any, Any], data: bytes) -> Any:
    """The decoded request; a `task_id` longer than any task's names no task."""
    request = decode_request(verb, data)
    task_id = getattr(request, "task_id", None) if verb.checks_task_id else None
    if isinstance(task_id, str) and len(task_id) > SHOWN_ID_CHARS:
        # Task ids are 26 characters: this names no task, and error messages must not echo it whole.
        raise TaskNotFoundError(f"no task with id {shown_id(task_id)}; `claw task list` shows recent ones")
    return request


def _identity(subject: str) -> str:
    """Who sent a request: the token before the verb in `<prefix>.api.<identity>.<verb>`, which the
    server's permissions bind to the sender's credentials."""
    return subject.rsplit(".", 2)[-2]


# Request fields that say who acts: filled from the subject, whatever the request said.
_ACTOR_FIELDS = ("by", "submitter", "registered_by")


def _as_sent_by(request: Any, identity: str) -> Any:
    """The request with its actor fields set to the sender's identity (a name typed into a request
    is never believed)."""
    fields = dict.fromkeys(actor_fields(type(request)), identity)
    return msgspec.structs.replace(request, **fields) if fields else request


def actor_fields(request_type: type) -> tuple[str, ...]:
    """The fields of a request type that name who acts: `by` and `submitter` when they hold a name
    (`usage`'s `by` is a list of columns to group by, not an actor)."""
    found = _FIELDS_OF.get(request_type)
    if found is None:
        hints = typing.get_type_hints(request_type)
        found = _FIELDS_OF[request_type] = tuple(n for n in _ACTOR_FIELDS if hints.get(n) in (str, str | None))
    return found


_FIELDS_OF: dict[type, tuple[str, ...]] = {}


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
