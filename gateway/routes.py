"""The REST API under `/v1`, as a table derived from the verb table (common/verbs.py).

Each `VerbRoute` names a verb and where its request's fields come from: the JSON body, the path
(`{task_id}`), the query string, and fixed values (`/nodes/{node_id}/drain` sets `control`). The
request Struct is decoded from their union, typed (query strings converted to the field's type),
and the reply Struct is encoded as it is. `POST /v1/verbs/{name}` calls any declared verb by name
with its request as the body, so a verb added to the table is reachable over HTTP at once; the
resource routes are the readable names of the same calls. The OpenAPI document (gateway/openapi.py)
is generated from this table and the verbs' Structs.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from common import verbs
from common.errors import InvalidInputError
from common.verbs import Verb
from communication.codec import nesting_exceeds

# Deeper bodies are refused before decoding (the decoder recurses; the coordinator's own limit on a
# task's input, coordinator.max_input_depth, is at most this).
MAX_BODY_DEPTH = 512
# The request fields that say who acts: always the authenticated caller (GatewayCalls stamps them too).
IDENTITY_FIELDS = ("by", "submitter", "registered_by")


def identity_fields(request_type: type) -> tuple[str, ...]:
    """The fields of a request type that name who acts, when they hold a name (`usage`'s `by` is a
    list of columns, not an actor): the coordinator's rule (coordinator/api_server.py)."""
    found = _FIELDS_OF.get(request_type)
    if found is None:
        hints = typing.get_type_hints(request_type)
        found = _FIELDS_OF[request_type] = tuple(n for n in IDENTITY_FIELDS if hints.get(n) in (str, str | None))
    return found


_FIELDS_OF: dict[type, tuple[str, ...]] = {}


# A body that is one task (it has "skill") is a batch of one.
Shape = Callable[[dict[str, Any], Mapping[str, str]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class VerbRoute:
    """`method path` answered by calling `verb`; `fixed` fields are set by the route itself."""

    method: str
    path: str
    verb: Verb[Any, Any]
    summary: str
    fixed: Mapping[str, object] = field(default_factory=dict)
    # Adjusts the merged fields before decoding (headers given): the submit route's one-task form.
    shape: Shape | None = None
    tag: str = ""

    @property
    def path_params(self) -> list[str]:
        """The `{name}` parts of the path."""
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]

    @property
    def has_body(self) -> bool:
        """Whether the request's fields come from a JSON body (else from the query string)."""
        return self.method != "GET"

    def build(
        self, body: bytes, path: Mapping[str, str], query: Mapping[str, str], headers: Mapping[str, str], actor: str
    ) -> Any:
        """The verb's request from the body, the path, the query string and the fixed fields; the
        fields naming who acts (`by`, `submitter`) are `actor`, whatever the body says."""
        fields: dict[str, Any] = {}
        if self.has_body and body.strip():
            if nesting_exceeds(body, MAX_BODY_DEPTH):
                raise InvalidInputError(f"the body nests arrays and objects more than {MAX_BODY_DEPTH} levels deep")
            try:
                decoded = msgspec.json.decode(body)
            except (msgspec.DecodeError, RecursionError) as exc:
                raise InvalidInputError(f"the body is not JSON: {exc}") from None
            if not isinstance(decoded, dict):
                raise InvalidInputError("the body must be a JSON object")
            fields.update(decoded)
        fields_sent = set(fields)
        known = self.verb.request.__struct_fields__
        fields.update((k, v) for k, v in query.items() if k in known)
        fields.update(path)
        fields.update(self.fixed)
        fields.update((name, actor) for name in identity_fields(self.verb.request))
        if self.shape is not None:
            fields = self.shape(fields, headers)
        try:
            # strict=False: query strings ("50", "true") become the field's type.
            return msgspec.json.decode(msgspec.json.encode(fields), type=self.verb.request, strict=False)
        except msgspec.ValidationError as exc:
            message = str(exc)
            if self.shape is _submit_shape and "tasks" not in fields_sent:
                # The one-task form was wrapped as a batch: name the place in the body that was sent.
                message = message.replace("`$.tasks[0]", "`$")
            raise InvalidInputError(f"invalid request: {message}") from None


def _submit_shape(fields: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """`POST /v1/tasks` takes one task (`{"skill": ...}`) or a batch (`{"tasks": [...]}`); an
    `Idempotency-Key` header is the key of a single task."""
    if "tasks" not in fields:
        request = {k: fields.pop(k) for k in _SUBMIT_REQUEST_FIELDS if k in fields}
        key = headers.get("idempotency-key")
        if key and "idempotency_key" not in fields:
            fields["idempotency_key"] = key
        return {"tasks": [fields], **request}
    return fields


# The fields of a submit that belong to the request, not to its task (the one-task form).
_SUBMIT_REQUEST_FIELDS = ("submitter", "tenant")


def _usage_shape(fields: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """`GET /v1/usage?by=tenant,model`: the columns to group by, comma-separated."""
    if isinstance(fields.get("by"), str):
        fields["by"] = [part for part in fields["by"].split(",") if part]
    return fields


def _route(method: str, path: str, verb: Verb[Any, Any], summary: str, tag: str, **fixed: object) -> VerbRoute:
    return VerbRoute(method, path, verb, summary, fixed, tag=tag)


ROUTES: tuple[VerbRoute, ...] = (
    _route("GET", "/v1/ping", verbs.PING, "Whether a coordinator answers, and its version", "cluster"),
    _route("GET", "/v1/status", verbs.STATUS, "The cluster overview with its alerts", "cluster"),
    VerbRoute(
        "POST", "/v1/tasks", verbs.SUBMIT, "Submit one task or a batch (all or none)", shape=_submit_shape, tag="tasks"
    ),
    _route("GET", "/v1/tasks", verbs.TASK_LIST, "A page of tasks, newest first, filtered by state and skill", "tasks"),
    _route("POST", "/v1/tasks/states", verbs.TASK_STATES, "The current states of many tasks", "tasks"),
    _route("GET", "/v1/tasks/{task_id}", verbs.TASK_GET, "One task with its timeline, attempts and artifacts", "tasks"),
    _route("POST", "/v1/tasks/{task_id}/cancel", verbs.TASK_CANCEL, "Cancel a task that has not finished", "tasks"),
    _route("POST", "/v1/tasks/{task_id}/retry", verbs.TASK_RETRY, "Run a finished task again", "tasks"),
    _route("GET", "/v1/tasks/{task_id}/artifacts", verbs.ARTIFACTS, "A page of a task's artifacts", "artifacts"),
    _route("GET", "/v1/approvals", verbs.APPROVALS, "The tasks waiting for approval, oldest first", "approvals"),
    _route("POST", "/v1/approvals/{task_id}/approve", verbs.APPROVE, "Approve a held task", "approvals"),
    _route("POST", "/v1/approvals/{task_id}/reject", verbs.REJECT, "Reject a held task, with a reason", "approvals"),
    _route("GET", "/v1/dlq", verbs.DLQ_LIST, "A page of dead letters, newest first", "dlq"),
    _route("POST", "/v1/dlq/replay", verbs.DLQ_REPLAY, "Replay one dead task or all (of a skill)", "dlq"),
    _route("POST", "/v1/dlq/{task_id}/replay", verbs.DLQ_REPLAY, "Replay one dead task", "dlq"),
    _route("POST", "/v1/dlq/purge", verbs.DLQ_PURGE, "Drop dead letters", "dlq"),
    _route("GET", "/v1/nodes", verbs.NODES, "The worker nodes", "nodes"),
    _route("POST", "/v1/nodes/{node_id}/drain", verbs.NODE_CONTROL, "Drain a node", "nodes", control="drained"),
    _route("POST", "/v1/nodes/{node_id}/pause", verbs.NODE_CONTROL, "Pause a node", "nodes", control="paused"),
    _route("POST", "/v1/nodes/{node_id}/resume", verbs.NODE_CONTROL, "Resume a node", "nodes", control="active"),
    _route("GET", "/v1/skills", verbs.SKILLS, "Registered skills", "skills"),
    _route("GET", "/v1/skills/{name}", verbs.SKILLS, "One skill's versions", "skills"),
    _route("POST", "/v1/skills/{name}/enable", verbs.SKILL_TOGGLE, "Enable a skill", "skills", enabled=True),
    _route("POST", "/v1/skills/{name}/disable", verbs.SKILL_TOGGLE, "Disable a skill", "skills", enabled=False),
    _route("POST", "/v1/guard/check", verbs.GUARD_CHECK, "What the guard would decide for a task", "guard"),
    _route("GET", "/v1/workflows", verbs.WORKFLOW_LIST, "Registered workflows and the newest runs", "workflows"),
    _route("POST", "/v1/workflows/{name}/runs", verbs.WORKFLOW_RUN, "Start a run of a workflow", "workflows"),
    _route("GET", "/v1/runs/{run_id}", verbs.WORKFLOW_SHOW, "One run with its nodes' states", "workflows"),
    _route("POST", "/v1/runs/{run_id}/rerun", verbs.WORKFLOW_RERUN, "Rerun a run from a node (from_node)", "workflows"),
    _route("POST", "/v1/runs/{run_id}/cancel", verbs.WORKFLOW_CANCEL, "Cancel a run", "workflows"),
    _route("GET", "/v1/schedules", verbs.SCHEDULE_LIST, "Every schedule", "schedules"),
    _route("GET", "/v1/schedules/{name}", verbs.SCHEDULE_SHOW, "A schedule, its next and last fires", "schedules"),
    _route("POST", "/v1/schedules/{name}/pause", verbs.SCHEDULE_PAUSE, "Pause a schedule", "schedules"),
    _route("POST", "/v1/schedules/{name}/resume", verbs.SCHEDULE_RESUME, "Resume a schedule", "schedules"),
    _route("POST", "/v1/schedules/{name}/trigger", verbs.SCHEDULE_TRIGGER, "Fire a schedule now", "schedules"),
    _route("POST", "/v1/schedules/{name}/events", verbs.SCHEDULE_EVENT, "An outside event (webhook)", "schedules"),
    _route("GET", "/v1/limits", verbs.LIMITS_LIST, "Rate limits and their live use", "limits"),
    VerbRoute(
        "GET",
        "/v1/usage",
        verbs.USAGE,
        "Calls, tokens and cost by tenant, skill, model",
        shape=_usage_shape,
        tag="limits",
    ),
)

# Any verb by name: `POST /v1/verbs/{name}` with the verb's request as the body.
VERB_PATH = "/v1/verbs/{verb}"


def generic_route(name: str) -> VerbRoute:
    """The route of `POST /v1/verbs/<name>`; an unknown name is a not-found error."""
    verb = verbs.BY_NAME.get(name)
    if verb is None:
        raise KeyError(name)
    return VerbRoute("POST", f"/v1/verbs/{name}", verb, f"Call {name} by name", tag="verbs")
