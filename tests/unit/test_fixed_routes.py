"""The gateway finds fixed-path routes by a dict lookup (gateway/fixed_routes.py); the route it
finds is always the one Starlette's own loop over the routes would have picked."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from gateway.context import Gateway
from gateway.dashboard import Dashboard
from gateway.fixed_routes import fixed_routes
from gateway.live import LiveHub
from gateway.live_routes import live_routes
from gateway.rest import rest_routes


async def _endpoint(request: Request) -> Response:
    return Response()


def _starlettes_pick(routes: list[BaseRoute], method: str, path: str) -> BaseRoute | None:
    probe = {"type": "http", "path": path, "root_path": "", "method": method}
    return next((route for route in routes if route.matches(probe)[0] is Match.FULL), None)


def _gateway_routes() -> list[BaseRoute]:
    # Building the route table reads nothing from its gateway: the handlers use it when called.
    gw, hub = cast(Gateway, object()), cast(LiveHub, object())
    return [*live_routes(gw, hub), *rest_routes(gw), *Dashboard(gw).routes()]


def test_every_fixed_route_of_the_gateway_is_the_one_starlette_would_pick() -> None:
    routes = _gateway_routes()
    table = fixed_routes(routes)
    assert table[("POST", "/v1/tasks")].path == "/v1/tasks"  # the submit route: the point of the table
    for (method, path), route in table.items():
        assert _starlettes_pick(routes, method, path) is route, (method, path)


def test_a_fixed_path_that_an_earlier_pattern_answers_is_left_to_starlettes_loop() -> None:
    pattern = Route("/v1/tasks/{task_id}", _endpoint, methods=["GET"])
    shadowed = Route("/v1/tasks/states", _endpoint, methods=["GET", "POST"])
    routes: list[BaseRoute] = [pattern, shadowed]
    table = fixed_routes(routes)
    assert ("GET", "/v1/tasks/states") not in table  # the pattern before it answers GET
    assert table[("POST", "/v1/tasks/states")] is shadowed  # the pattern does not take POST
    assert _starlettes_pick(routes, "GET", "/v1/tasks/states") is pattern


def test_the_same_path_with_two_methods_maps_each_method_to_its_route() -> None:
    form = Route("/login", _endpoint, methods=["GET"])
    submit = Route("/login", _endpoint, methods=["POST"])
    table = fixed_routes([form, submit])
    assert table[("GET", "/login")] is form and table[("HEAD", "/login")] is form
    assert table[("POST", "/login")] is submit
