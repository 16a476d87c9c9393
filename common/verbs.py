"""The coordinator API's verbs, each declared once: name, request, reply, and the role it needs.

Everything else derives from a declaration: the subject (`<prefix>.api.<identity>.<name>`), the client's typed
call (`await client.call(verbs.TASK_CANCEL, TaskCancelRequest(...))` returns a `TaskActionReply`),
and the type of the coordinator's handler (`@serves(verbs.TASK_CANCEL)` on a method taking the
request and returning the reply; `coordinator/api_routes.py` checks it). `BY_NAME` finds a verb by
its name for callers that only have a string, such as an HTTP gateway building the request from JSON.

The coordinator refuses a request whose sender's identity does not hold the verb's role
(`coordinator/authorization.py`); viewer verbs are open to every identity holding some role. Adding a verb:
docs/Architecture.md, "The API: one declaration per verb".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import KW_ONLY, dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import msgspec

from common import api
from common.models import TaskView

RequestT = TypeVar("RequestT", bound=msgspec.Struct)
ReplyT = TypeVar("ReplyT", bound=msgspec.Struct)


class Role(StrEnum):
    """Who may call a verb (DESIGN.md, "Who may do what"); a person or program may hold several."""

    ADMIN = "admin"  # changes what the cluster can run or keeps: skill installs, purges
    OPERATOR = "operator"  # runs the cluster: cancel, retry, replay, node control
    APPROVER = "approver"  # says yes or no to tasks the guard holds
    SUBMITTER = "submitter"  # submits tasks
    VIEWER = "viewer"  # reads
    # trust: a worker node, for the calls its handlers make (flow control's permits); only a worker's
    # credentials hold it (common/identity.py), never a person's.
    WORKER = "worker"


def roles_allow(roles: Collection[Role], needed: Role) -> bool:
    """Whether holding `roles` lets a caller call a verb that needs `needed`: it holds that role, or
    the verb is a read and it holds any role (the one rule of the coordinator and the gateway)."""
    return needed in roles or (needed is Role.VIEWER and bool(roles))


@dataclass(frozen=True, slots=True)
class Verb(Generic[RequestT, ReplyT]):
    """One API verb: its subject's last token, the Structs it takes and answers, and its role."""

    name: str
    request: type[RequestT]
    reply: type[ReplyT]
    _: KW_ONLY
    role: Role
    # How long the client waits for the answer by default (None: the connection's request timeout).
    timeout_s: float | None = None
    # The request's `task_id`, when it has one, names a task: the server answers `not_found` for an
    # id longer than any task's before the handler runs. False where it is a free-form filter.
    checks_task_id: bool = True


_DECLARED: dict[str, Verb[Any, Any]] = {}


def _declare(verb: Verb[RequestT, ReplyT]) -> Verb[RequestT, ReplyT]:
    """Add a verb to the table, once."""
    if verb.name in _DECLARED:
        raise ValueError(f"the API verb '{verb.name}' is declared twice")
    _DECLARED[verb.name] = verb
    return verb


PING = _declare(Verb("ping", api.Empty, api.PingReply, role=Role.VIEWER))
SUBMIT = _declare(Verb("submit", api.SubmitRequest, api.SubmitReply, role=Role.SUBMITTER))
TASK_GET = _declare(Verb("task_get", api.TaskGetRequest, TaskView, role=Role.VIEWER))
TASK_LIST = _declare(Verb("task_list", api.TaskListRequest, api.TaskListReply, role=Role.VIEWER))
TASK_STATES = _declare(Verb("task_states", api.TaskStatesRequest, api.TaskStatesReply, role=Role.VIEWER))
TASK_CANCEL = _declare(Verb("task_cancel", api.TaskCancelRequest, api.TaskActionReply, role=Role.OPERATOR))
TASK_RETRY = _declare(Verb("task_retry", api.TaskRetryRequest, api.TaskActionReply, role=Role.OPERATOR))
NODES = _declare(Verb("nodes", api.NodesRequest, api.NodesReply, role=Role.VIEWER))
NODE_CONTROL = _declare(Verb("node_control", api.NodeControlRequest, api.NodeControlReply, role=Role.OPERATOR))
STATUS = _declare(Verb("status", api.StatusRequest, api.StatusReply, role=Role.VIEWER))
DLQ_LIST = _declare(Verb("dlq_list", api.DlqListRequest, api.DlqListReply, role=Role.VIEWER))
DLQ_REPLAY = _declare(Verb("dlq_replay", api.DlqReplayRequest, api.DlqReplayReply, role=Role.OPERATOR, timeout_s=60.0))
DLQ_PURGE = _declare(Verb("dlq_purge", api.DlqPurgeRequest, api.DlqPurgeReply, role=Role.ADMIN, timeout_s=60.0))
SKILLS = _declare(Verb("skills", api.SkillsRequest, api.SkillsReply, role=Role.VIEWER))
SKILL_TOGGLE = _declare(Verb("skill_toggle", api.SkillToggleRequest, api.SkillsReply, role=Role.ADMIN))
SKILL_INSTALL = _declare(Verb("skill_install", api.SkillInstallRequest, api.SkillInstallReply, role=Role.ADMIN))
APPROVALS = _declare(Verb("approvals", api.ApprovalsRequest, api.ApprovalsReply, role=Role.VIEWER))
APPROVE = _declare(Verb("approve", api.ApproveRequest, api.ApprovalOutcome, role=Role.APPROVER))
REJECT = _declare(Verb("reject", api.RejectRequest, api.ApprovalOutcome, role=Role.APPROVER))
GUARD_CHECK = _declare(Verb("guard_check", api.GuardCheckRequest, api.GuardCheckReply, role=Role.SUBMITTER))
AUDIT_VERIFY = _declare(Verb("audit_verify", api.Empty, api.AuditReply, role=Role.OPERATOR, timeout_s=600.0))
ARTIFACTS = _declare(Verb("artifacts", api.ArtifactsRequest, api.ArtifactsReply, role=Role.VIEWER))
ARTIFACT_STORE = _declare(Verb("artifact_store", api.Empty, api.ArtifactStoreReply, role=Role.VIEWER))
QUARANTINE_LIST = _declare(
    Verb(
        "quarantine_list", api.QuarantineListRequest, api.QuarantineListReply, role=Role.OPERATOR, checks_task_id=False
    )
)

# Flow control (issue 12, docs/Flow_control.md): limits by key, per-call permits, usage.
LIMITS_LIST = _declare(Verb("limits_list", api.LimitsListRequest, api.LimitsReply, role=Role.VIEWER))
LIMITS_SET = _declare(Verb("limits_set", api.LimitsSetRequest, api.LimitsReply, role=Role.OPERATOR))
LIMITS_DELETE = _declare(Verb("limits_delete", api.LimitsDeleteRequest, api.LimitsReply, role=Role.OPERATOR))
USAGE = _declare(Verb("usage", api.UsageRequest, api.UsageReply, role=Role.VIEWER))
# Called by workers for a handler's `ctx.limit(...)`: the worker role, which only a worker's credentials
# hold (a worker may release only permits it took; the coordinator checks the node id it recorded).
PERMIT_ACQUIRE = _declare(
    Verb("permit_acquire", api.PermitAcquireRequest, api.PermitReply, role=Role.WORKER, timeout_s=330.0)
)
CACHE_STATS = _declare(Verb("cache_stats", api.Empty, api.CacheStatsReply, role=Role.VIEWER))
CACHE_CLEAR = _declare(Verb("cache_clear", api.Empty, api.CacheClearReply, role=Role.OPERATOR))
PERMIT_RELEASE = _declare(Verb("permit_release", api.PermitReleaseRequest, api.PermitReply, role=Role.WORKER))
# Workflows (coordinator/workflows).
WORKFLOW_VALIDATE = _declare(
    Verb("workflow_validate", api.WorkflowSpecRequest, api.WorkflowValidateReply, role=Role.SUBMITTER)
)
WORKFLOW_REGISTER = _declare(
    Verb("workflow_register", api.WorkflowSpecRequest, api.WorkflowRegisterReply, role=Role.OPERATOR, timeout_s=30.0)
)
# A start waits for its first tasks to be published: give it the time a busy cluster takes.
WORKFLOW_RUN = _declare(
    Verb("workflow_run", api.WorkflowRunRequest, api.WorkflowRunReply, role=Role.SUBMITTER, timeout_s=30.0)
)
WORKFLOW_RERUN = _declare(
    Verb("workflow_rerun", api.WorkflowRerunRequest, api.WorkflowRunReply, role=Role.SUBMITTER, timeout_s=30.0)
)
WORKFLOW_LIST = _declare(Verb("workflow_list", api.WorkflowListRequest, api.WorkflowListReply, role=Role.VIEWER))
WORKFLOW_SHOW = _declare(Verb("workflow_show", api.WorkflowRunGetRequest, api.WorkflowRunView, role=Role.VIEWER))
WORKFLOW_CANCEL = _declare(Verb("workflow_cancel", api.WorkflowCancelRequest, api.WorkflowRunView, role=Role.OPERATOR))
# Schedules and triggers (issue 13: 4; coordinator/schedules/, docs/Scheduling.md).
SCHEDULE_LIST = _declare(Verb("schedule_list", api.ScheduleListRequest, api.ScheduleListReply, role=Role.VIEWER))
SCHEDULE_SHOW = _declare(Verb("schedule_show", api.ScheduleNameRequest, api.ScheduleShowReply, role=Role.VIEWER))
SCHEDULE_CREATE = _declare(Verb("schedule_create", api.ScheduleCreateRequest, api.ScheduleView, role=Role.OPERATOR))
SCHEDULE_DELETE = _declare(Verb("schedule_delete", api.ScheduleNameRequest, api.ScheduleView, role=Role.OPERATOR))
SCHEDULE_PAUSE = _declare(Verb("schedule_pause", api.ScheduleNameRequest, api.ScheduleView, role=Role.OPERATOR))
SCHEDULE_RESUME = _declare(Verb("schedule_resume", api.ScheduleNameRequest, api.ScheduleView, role=Role.OPERATOR))
SCHEDULE_TRIGGER = _declare(
    Verb("schedule_trigger", api.ScheduleTriggerRequest, api.ScheduleFireReply, role=Role.OPERATOR)
)
# What the HTTP gateway calls for a webhook.
SCHEDULE_EVENT = _declare(Verb("schedule_event", api.ScheduleEventRequest, api.ScheduleFireReply, role=Role.SUBMITTER))

# The response cache's writes (issue 11 / 12 item 6): a worker reports the answer of a real call for
# the task attempt it holds; only the coordinator writes the bucket (docs/Flow_control.md).
CACHE_PUT = _declare(Verb("cache_put", api.CachePutRequest, api.CachePutReply, role=Role.WORKER, timeout_s=15.0))

# Every verb, in the order declared, and by name.
ALL: tuple[Verb[Any, Any], ...] = tuple(_DECLARED.values())
BY_NAME: Mapping[str, Verb[Any, Any]] = MappingProxyType(_DECLARED)
