"""The gateway's Starlette application: REST under /v1, live events, the dashboard, /healthz, /docs."""

from __future__ import annotations

import functools

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from common.errors import ClawError, InternalError
from common.log import get_logger
from gateway import openapi
from gateway.context import Gateway
from gateway.dashboard import Dashboard
from gateway.errors import error_response, response_for
from gateway.fixed_routes import FixedPathRouter
from gateway.live import LiveHub
from gateway.live_routes import live_routes
from gateway.rest import json_response, rest_routes

log = get_logger("gateway.app")


@functools.cache
def _openapi_bytes() -> bytes:
    return msgspec.json.encode(openapi.document())


def build_app(gw: Gateway, hub: LiveHub) -> Starlette:
    """The application serving `gw`."""

    async def healthz(request: Request) -> Response:
        connected = gw.calls.client.conn.is_connected
        return json_response({"ok": connected, "nats": "connected" if connected else "disconnected"},
                             200 if connected else 503)  # fmt: skip

    async def openapi_json(request: Request) -> Response:
        await gw.authenticate(request)
        return Response(_openapi_bytes(), media_type="application/json")

    dashboard = Dashboard(gw)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404 and _wants_page(request):
            return await dashboard.not_found(request)
        return _http_error(request, exc)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *live_routes(gw, hub),
        *rest_routes(gw),
        *dashboard.routes(),
    ]
    middleware = []
    if gw.settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=gw.settings.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "X-API-Key"],
                max_age=600,
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={ClawError: _claw_error, HTTPException: http_error, Exception: _unexpected},
    )
    # Same routes, fixed paths found by a dict lookup (gateway/fixed_routes.py); the middleware
    # stack is built on the first request, around whichever router is here then.
    app.router = FixedPathRouter(routes)
    return app


async def _claw_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClawError)
    return response_for(exc)


def _wants_page(request: Request) -> bool:
    """A browser's navigation (it asks for HTML) outside the REST API: it gets a page, not JSON."""
    path = request.url.path
    return "text/html" in request.headers.get("accept", "") and path != "/v1" and not path.startswith("/v1/")


def _http_error(request: Request, exc: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = {404: f"no such endpoint: {request.url.path}", 405: f"{request.method} is not allowed here"}
    return error_response(code, message.get(exc.status_code, str(exc.detail)), exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("gateway.unexpected_error", path=request.url.path, exc_info=exc)
    return response_for(InternalError("the gateway failed on this request; its log has the details"))
