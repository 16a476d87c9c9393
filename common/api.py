"""Request and reply bodies of the coordinator API (`<prefix>.api.<verb>`, request/reply).

A reply is an `ApiReply` envelope: `error` when the request was refused (its `code` maps to a class
in `common.errors`), otherwise `data` holds the verb's reply body as raw JSON, decoded by the caller
with the type it expects.
"""

from __future__ import annotations

import msgspec

from common.models import JSON_NULL, ClusterStatus, NodeView, TaskSpec, TaskSummary
from common.states import TaskState


class ApiVerb:
    """The verbs the coordinator answers; each is the last token of its subject."""

    PING = "ping"
    SUBMIT = "submit"
    TASK_GET = "task_get"
    TASK_LIST = "task_list"
    TASK_STATES = "task_states"
    NODES = "nodes"
    STATUS = "status"


class ApiError(msgspec.Struct, frozen=True):
    """Why a request was refused: a stable code and a one-line message for the user."""

    code: str
    message: str


class ApiReply(msgspec.Struct, frozen=True, omit_defaults=True):
    """The envelope of every API reply."""

    data: msgspec.Raw = JSON_NULL
    error: ApiError | None = None


class PingReply(msgspec.Struct, frozen=True, kw_only=True):
    """The coordinator is up; what it runs."""

    version: str
    node_id: str
    skills: list[str]


class SubmitRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One or more tasks to admit together: all are admitted or none is."""

    tasks: list[TaskSpec]
    submitter: str | None = None


class SubmitResult(msgspec.Struct, frozen=True, kw_only=True):
    """The admitted task; `duplicate` when an idempotency key named an existing task."""

    task_id: str
    state: TaskState
    duplicate: bool = False


class SubmitReply(msgspec.Struct, frozen=True, kw_only=True):
    """The results, in the order of the request's tasks."""

    results: list[SubmitResult]


class TaskGetRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Ask for one task, optionally with its attempts and event log."""

    task_id: str
    history: bool = True


class TaskListRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Filter and size of `claw task list`, newest first."""

    state: TaskState | None = None
    skill: str | None = None
    limit: int = 50


class TaskListReply(msgspec.Struct, frozen=True, kw_only=True):
    """Tasks, newest first."""

    tasks: list[TaskSummary]


class TaskStatesRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Current states of many tasks at once (what `claw submit --wait` polls)."""

    task_ids: list[str]


class TaskStatesReply(msgspec.Struct, frozen=True, kw_only=True):
    """task id -> state; unknown ids are absent."""

    states: dict[str, TaskState]


class NodesReply(msgspec.Struct, frozen=True, kw_only=True):
    """Every node the registry knows, online ones first."""

    nodes: list[NodeView]


class StatusReply(msgspec.Struct, frozen=True, kw_only=True):
    """The cluster overview."""

    status: ClusterStatus


class Empty(msgspec.Struct, frozen=True):
    """A request with no arguments."""
