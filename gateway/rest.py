"""The REST endpoints: one per row of the route table, plus any verb by name and artifact downloads."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgspec
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from common import api, verbs
from common.errors import PayloadTooLargeError, TaskNotFoundError
from gateway.context import Gateway
from gateway.errors import error_response
from gateway.routes import ROUTES, VERB_PATH, VerbRoute, generic_route

# A body larger than this is refused before it is read whole (NATS's own limit is lower by default).
MAX_BODY_BYTES = 16 * 1024 * 1024
Endpoint = Callable[[Request], Awaitable[Response]]
NO_QUERY: Mapping[str, str] = MappingProxyType({})


def json_response(value: Any, status: int = 200) -> Response:
    """A msgspec-encoded JSON answer."""
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request's body, refused past `limit` bytes without reading the rest."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body is {int(declared)} bytes; at most {limit} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the body is over {limit} bytes; send less in one request")
        chunks.append(chunk)
    return b"".join(chunks)


def verb_endpoint(gw: Gateway, route: VerbRoute) -> Endpoint:
    """The handler of one route: authenticate, build the verb's request, call it, encode the reply."""

    async def endpoint(request: Request) -> Response:
        caller = await gw.authenticate(request)
        gw.calls.check(caller.principal, route.verb)
        body = await read_body(request) if route.has_body else b""
        # Parsed only when there is one (a submit has none; parsing nothing cost 4 % of it).
        query = request.query_params if request.scope["query_string"] else NO_QUERY
        built = route.build(body, request.path_params, query, request.headers, caller.principal.name)
        reply = await gw.calls.call(caller.principal, route.verb, built)
        return json_response(reply)

    return endpoint


def generic_endpoint(gw: Gateway) -> Endpoint:
    """`POST /v1/verbs/{verb}`: any declared verb, its request as the body."""

    async def endpoint(request: Request) -> Response:
        caller = await gw.authenticate(request)
        name = request.path_params["verb"]
        try:
            route = generic_route(name)
        except KeyError:
            return error_response("unknown_verb", f"no API verb is called {name!r}; GET /openapi.json lists them")
        gw.calls.check(caller.principal, route.verb)
        built = route.build(await read_body(request), {}, {}, request.headers, caller.principal.name)
        return json_response(await gw.calls.call(caller.principal, route.verb, built))

    return endpoint


def artifact_endpoint(gw: Gateway) -> Endpoint:
    """`GET /v1/tasks/{task_id}/artifacts/{name}`: the newest attempt's artifact of that name, streamed
    from a temporary copy (the store's own download is atomic; the copy is removed after sending)."""

    async def endpoint(request: Request) -> Response:
        caller = await gw.authenticate(request)
        task_id, name = request.path_params["task_id"], request.path_params["name"]
        reply = await gw.calls.call(caller.principal, verbs.ARTIFACTS, api.ArtifactsRequest(task_id=task_id))
        found = [a for a in reply.artifacts if a.name == name]
        if not found:
            raise TaskNotFoundError(f"task {task_id} has no artifact called {name!r}")
        artifact = max(found, key=lambda a: a.attempt)
        store = await gw.artifact_store()
        fd, tmp = tempfile.mkstemp(prefix="claw-gw-artifact-")
        os.close(fd)
        path = Path(tmp)
        try:
            await store.download(artifact.key, path)
        except BaseException:
            _remove(path)
            raise
        disposition = "inline" if request.query_params.get("inline") else "attachment"
        return FileResponse(
            path,
            media_type=artifact.content_type,
            filename=name,
            content_disposition_type=disposition,
            background=BackgroundTask(_remove, path),
        )

    return endpoint


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def rest_routes(gw: Gateway) -> list[BaseRoute]:
    """Every REST route of `/v1`."""
    routes: list[BaseRoute] = [
        Route("/v1/tasks/{task_id}/artifacts/{name}", artifact_endpoint(gw), methods=["GET"]),
        Route(VERB_PATH, generic_endpoint(gw), methods=["POST"]),
    ]
    for route in ROUTES:
        routes.append(Route(route.path, verb_endpoint(gw, route), methods=[route.method]))
    return routes
