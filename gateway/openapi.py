"""The OpenAPI 3.1 document of the REST API, generated from the route table and the verbs' Structs."""

from __future__ import annotations

from typing import Any

import msgspec

from common import __version__, verbs
from gateway.errors import ErrorReply
from gateway.routes import ROUTES, VERB_PATH, VerbRoute

REF = "#/components/schemas/{name}"
# The routes that are not verb calls, documented by hand.
_EXTRA_PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {
        "get": {
            "summary": "Whether the gateway runs and reaches NATS (no authentication)",
            "tags": ["cluster"],
            "security": [],
            "x-role": "none (no credential)",
            "responses": {"200": {"description": "up"}, "503": {"description": "NATS unreachable"}},
        }
    },
    "/v1/tasks/{task_id}/artifacts/{name}": {
        "get": {
            "summary": "Download a task's artifact (its newest attempt's), streamed",
            "tags": ["artifacts"],
            "parameters": [
                {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {"200": {"description": "the artifact's bytes, with its content type"}},
        }
    },
    "/v1/tasks/{task_id}/events": {
        "get": {
            "summary": "The task's event log as Server-Sent Events, live until the task ends; resumes after "
            "Last-Event-ID (header, or ?last_event_id=)",
            "tags": ["live"],
            "parameters": [
                {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "integer"}},
            ],
            "responses": {"200": {"description": "text/event-stream; each event's id is its event-log id"}},
        }
    },
    "/v1/live": {
        "get": {
            "summary": "WebSocket: subscribe to several tasks' events and the overview (docs/HTTP_API.md)",
            "tags": ["live"],
            "responses": {"101": {"description": "switching protocols"}},
        }
    },
}


def _schema_components(types: list[Any]) -> tuple[Any, dict[str, Any]]:
    """msgspec's JSON schemas of `types`. msgspec cannot write a `msgspec.Raw` field default (a task's
    `input` defaults to `{}`) into a schema; its schema module converts defaults with `to_builtins`,
    which is given, for this call only, a version that decodes Raw values."""
    from msgspec import _json_schema

    module: Any = _json_schema  # a private module: typed loosely on purpose
    original = module.to_builtins

    def to_builtins(value: Any, **options: Any) -> Any:
        if isinstance(value, msgspec.Raw):
            return msgspec.json.decode(value)
        return original(value, **options)

    module.to_builtins = to_builtins
    try:
        return msgspec.json.schema_components(types, ref_template=REF)
    finally:
        module.to_builtins = original


def _ref(name: str) -> str:
    return REF.format(name=name)


def _operation(route: VerbRoute) -> dict[str, Any]:
    request, reply = route.verb.request.__name__, route.verb.reply.__name__
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.verb.name}_{route.method.lower()}_{route.path.count('/')}_{len(route.path)}",
        "tags": [route.tag or "verbs"],
        "description": f"Verb `{route.verb.name}`; needs the `{route.verb.role.value}` role.",
        # The same as fields, for the dashboard's API page (the description is Markdown for OpenAPI tools).
        "x-verb": route.verb.name,
        "x-role": route.verb.role.value,
        "responses": {
            "200": {"description": reply, "content": {"application/json": {"schema": {"$ref": _ref(reply)}}}},
            "default": {
                "description": "an error: a stable code and a message",
                "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorReply")}}},
            },
        },
    }
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in route.path_params]
    if route.has_body:
        op["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {"$ref": REF.format(name=request)}}},
        }
    else:
        taken = set(route.path_params) | set(route.fixed)
        params += [
            {"name": f, "in": "query", "required": False, "schema": {}}
            for f in route.verb.request.__struct_fields__
            if f not in taken
        ]
    if params:
        op["parameters"] = params
    return op


def document() -> dict[str, Any]:
    """The OpenAPI document (built once per process: it only depends on the code)."""
    types: set[Any] = {ErrorReply}
    for verb in verbs.ALL:
        types.update((verb.request, verb.reply))
    _, components = _schema_components(sorted(types, key=lambda t: t.__name__))
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    paths[VERB_PATH] = {
        "post": {
            "summary": "Call any API verb by name, its request as the body",
            "tags": ["verbs"],
            "description": "Verbs: "
            + ", ".join(f"`{v.name}` ({v.request.__name__} -> {v.reply.__name__}, {v.role.value})" for v in verbs.ALL),
            "x-verb": "{verb}",
            "x-role": "the verb's",
            "parameters": [{"name": "verb", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "the verb's reply"}},
        }
    }
    paths.update(_EXTRA_PATHS)
    return {
        "openapi": "3.1.0",
        "info": {"title": "OpenClaw Cluster gateway", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "an API key (claw gateway key create)"},
                "session": {"type": "apiKey", "in": "cookie", "name": "claw_session"},
            },
        },
        "security": [{"apiKey": []}, {"session": []}],
    }
