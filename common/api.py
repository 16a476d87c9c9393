"""Request and reply bodies of the coordinator API (`<prefix>.api.<verb>`, request/reply).

A reply is an `ApiReply` envelope: `error` when the request was refused (its `code` maps to a class
in `common.errors`), otherwise `data` holds the verb's reply body as raw JSON, decoded by the caller
with the type it expects.
"""

from __future__ import annotations

import msgspec

from common.models import JSON_NULL, ClusterStatus, DeadLetterView, NodeView, TaskSpec, TaskSummary
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
    TASK_CANCEL = "task_cancel"
    TASK_RETRY = "task_retry"
    DLQ_LIST = "dlq_list"
    DLQ_REPLAY = "dlq_replay"
    DLQ_PURGE = "dlq_purge"


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


class TaskCancelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Cancel a task that has not finished."""

    task_id: str
    reason: str = "cancelled by request"
    by: str | None = None


class TaskRetryRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Run a failed, dead or cancelled task again, as a new attempt series."""

    task_id: str
    by: str | None = None


class TaskActionReply(msgspec.Struct, frozen=True, kw_only=True):
    """The task's state after the action; `changed` is false when there was nothing to do."""

    task_id: str
    state: TaskState
    changed: bool = True
    note: str = ""


class DlqListRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Newest dead letters first."""

    skill: str | None = None
    limit: int = 50


class DlqListReply(msgspec.Struct, frozen=True, kw_only=True):
    """Dead letters, newest first."""

    letters: list[DeadLetterView]


class DlqReplayRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Replay one dead task (`task_id`) or every dead task in the DLQ (`all`), optionally of a skill."""

    task_id: str | None = None
    all: bool = False
    skill: str | None = None
    by: str | None = None


class DlqReplayReply(msgspec.Struct, frozen=True, kw_only=True):
    """What each replay did."""

    results: list[TaskActionReply]


class DlqPurgeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Drop dead letters: all, of one skill, and/or older than a duration."""

    skill: str | None = None
    older_than_s: float | None = None


class DlqPurgeReply(msgspec.Struct, frozen=True, kw_only=True):
    """How many dead letters were removed."""

    purged: int


class Empty(msgspec.Struct, frozen=True):
    """A request with no arguments."""
