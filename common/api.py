"""Request and reply bodies of the coordinator API (`<prefix>.api.<verb>`, request/reply).

Which verb takes which request and answers which reply is declared once, in `common/verbs.py`.

A reply is an `ApiReply` envelope: `error` when the request was refused (its `code` maps to a class
in `common.errors`), otherwise `data` holds the verb's reply body as raw JSON, decoded by the caller
with the type it expects.

Every list is paged, so that no reply exceeds the NATS server's max_payload: a list request has a
page size (`limit`) and a `cursor` (an opaque string from the previous page's `next_cursor`); its
reply holds one page, `next_cursor` when more items follow, and `total` (on the first page, where
counting is cheap). The coordinator also ends a page early when the next item would not fit.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from common.config import ArtifactSettings
from common.flow import Limit
from common.models import (
    EMPTY_OBJECT,
    JSON_NULL,
    ArtifactView,
    ClusterStatus,
    DeadLetterView,
    NodeView,
    QuarantinedEvent,
    TaskSpec,
    TaskSummary,
)
from common.skills import RegistryEntry, SkillManifest
from common.states import NodeControl, NodeStatus, Priority, TaskState


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
    # The port of the coordinator's Prometheus endpoint (`claw up` prints it), None when off.
    metrics_port: int | None = None


class SubmitRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One or more tasks to admit together: all are admitted or none is."""

    tasks: list[TaskSpec]
    submitter: str | None = None
    # The tenant the tasks are for (unset: `default`); credentials will decide it once roles exist
    # (coordinator/tenants/identity.py).
    tenant: str | None = None


class SubmitResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The admitted task; `duplicate` when an idempotency key named an existing task; `note` says why
    a task is not queued (held for approval, denied by the guard), `rule` names the guard rule that
    held or denied it and `approvals_needed` how many approvals a held task waits for.

    Fields at their defaults are left out of the JSON (readers fill them in): one reply holds up to
    thousands of these, and how many fit one NATS message bounds the tasks a submit may carry."""

    task_id: str
    state: TaskState
    duplicate: bool = False
    note: str = ""
    rule: str = ""
    approvals_needed: int = 0


class SubmitReply(msgspec.Struct, frozen=True, kw_only=True):
    """The results, in the order of the request's tasks."""

    results: list[SubmitResult]


class TaskGetRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Ask for one task, optionally with its attempts and event log."""

    task_id: str
    history: bool = True


class TaskListRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Filter and page of `claw task list`, newest first."""

    state: TaskState | None = None
    skill: str | None = None
    limit: int = 50
    cursor: str | None = None
    tenant: str | None = None
    # Created at or after / before these times (Unix seconds), read from the task ids (ULIDs sort by
    # their creation time): the dashboard's and `claw task list --since` time filter.
    created_after: float | None = None
    created_before: float | None = None


class TaskListReply(msgspec.Struct, frozen=True, kw_only=True):
    """A page of tasks, newest first; `total` counts every task the filter matches (first page)."""

    tasks: list[TaskSummary]
    next_cursor: str | None = None
    total: int | None = None


class TaskStatesRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Current states of many tasks at once (what `claw submit --wait` polls)."""

    task_ids: list[str]


class TaskStatesReply(msgspec.Struct, frozen=True, kw_only=True):
    """task id -> state; unknown ids are absent."""

    states: dict[str, TaskState]


class NodesRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A page of the node registry."""

    limit: int = 1000
    cursor: str | None = None


class NodesReply(msgspec.Struct, frozen=True, kw_only=True):
    """A page of the nodes the registry knows, online ones first."""

    nodes: list[NodeView]
    next_cursor: str | None = None
    total: int | None = None


class StatusRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The overview, with rates over the tasks that finished in the last `window_s` seconds."""

    window_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0


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
    """A page of dead letters, newest first."""

    skill: str | None = None
    limit: int = 50
    cursor: str | None = None


class DlqListReply(msgspec.Struct, frozen=True, kw_only=True):
    """A page of dead letters, newest first; `total` is the DLQ's size (first page, all skills)."""

    letters: list[DeadLetterView]
    next_cursor: str | None = None
    total: int | None = None


class DlqReplayRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Replay one dead task (`task_id`) or every dead task in the DLQ (`all`), optionally of a skill.

    With `all`, one request replays at most `limit` letters, from `cursor` on; the client sends the
    reply's `next_cursor` back until there is none.
    """

    task_id: str | None = None
    all: bool = False
    skill: str | None = None
    by: str | None = None
    limit: int = 200
    cursor: str | None = None


class DlqReplayReply(msgspec.Struct, frozen=True, kw_only=True):
    """What each replay did; `next_cursor` when `all` has more letters to go through."""

    results: list[TaskActionReply]
    next_cursor: str | None = None


class DlqPurgeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Drop dead letters: all, of one skill, and/or older than a duration."""

    skill: str | None = None
    older_than_s: float | None = None


class DlqPurgeReply(msgspec.Struct, frozen=True, kw_only=True):
    """How many dead letters were removed."""

    purged: int


class ApprovalView(msgspec.Struct, frozen=True, kw_only=True):
    """A held task as `claw approvals` shows it."""

    task_id: str
    skill: str
    risk: str | None
    rule: str | None
    input_summary: str
    submitter: str | None
    since: float
    expires_at: float | None
    approvals_needed: int
    approved_by: list[str]


class ApprovalOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What an approve or reject did."""

    task_id: str
    state: TaskState
    approved_by: list[str] = []
    approvals_needed: int = 0


class ApprovalsRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A page of held tasks, oldest first."""

    limit: int = 500
    cursor: str | None = None


class ApprovalsReply(msgspec.Struct, frozen=True, kw_only=True):
    """A page of held tasks, oldest first; `total` counts every held task (first page)."""

    approvals: list[ApprovalView]
    next_cursor: str | None = None
    total: int | None = None


class ApproveRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One person's yes for a held task."""

    task_id: str
    # Who approves: set by the coordinator from the request's subject (the sender's credentials);
    # whatever a client puts here is replaced.
    by: str = ""
    note: str | None = None


class RejectRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A no for a held task; it ends `rejected`."""

    task_id: str
    reason: str
    # Set by the coordinator from the sender's credentials, like ApproveRequest.by.
    by: str = ""


class GuardDecision(msgspec.Struct, frozen=True, kw_only=True):
    """What the guard decides for a task, and which rule, and why."""

    action: str
    rule: str
    approvals: int = 0
    reason: str = ""
    explanation: list[str] = []


class GuardCheckRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Explain the guard's decision for a would-be task (nothing is submitted)."""

    skill: str
    input: msgspec.Raw = EMPTY_OBJECT
    submitter: str | None = None


class GuardCheckReply(msgspec.Struct, frozen=True, kw_only=True):
    """The skill's risk and the guard's decision."""

    skill: str
    risk: str
    decision: GuardDecision


class SkillInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A registered skill version, and the online nodes that run the skill."""

    entry: RegistryEntry
    nodes: list[str] = []


class SkillsRequest(msgspec.Struct, frozen=True, kw_only=True):
    """List skills: all, one by name, or those matching words; a page of them."""

    name: str | None = None
    search: str | None = None
    limit: int = 500
    cursor: str | None = None


class SkillsReply(msgspec.Struct, frozen=True, kw_only=True):
    """A page of skills, by name."""

    skills: list[SkillInfo]
    next_cursor: str | None = None
    total: int | None = None


class SkillToggleRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Enable (one version) or disable (one or all versions) a skill."""

    name: str
    version: str | None = None
    enabled: bool
    by: str | None = None


class SkillInstallRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Register a skill whose files were uploaded to the skill-code store as `archive`.

    `archive_sha256` is the uploader's sha256 of the archive: the coordinator hashes what the store
    holds and refuses the install when they differ. `allow_risk_change` lets a version declare a
    lower risk than the highest of the skill's registered versions (recorded `skill.risk_lowered`).
    """

    manifest: SkillManifest
    checksum: str
    archive: str
    by: str | None = None
    archive_sha256: str | None = None
    allow_risk_change: bool = False


class SkillInstallReply(msgspec.Struct, frozen=True, kw_only=True):
    """The registered entry; `created` is false when the same version and files were there already."""

    entry: RegistryEntry
    created: bool


class AuditReply(msgspec.Struct, frozen=True, kw_only=True):
    """The result of walking the event log's hash chain and checking it against the signed anchors.

    `broken_event`/`problem`: the first thing found wrong (`broken_event` is None when the fault is
    in the anchors, not the log). `anchored_event`: the highest validly signed anchor the log was
    checked against; `head_event`: the log's newest event; `anchor_key`: the public key the anchors
    were checked with; `anchor_problems`: every fault in the anchor history (forged, deleted, moved
    back); `anchor_note`: why no anchor was checked, when none was.
    """

    ok: bool
    checked: int
    broken_event: int | None = None
    problem: str | None = None
    anchored_event: int | None = None
    head_event: int | None = None
    anchor_key: str | None = None
    anchor_problems: list[str] = []
    anchor_note: str | None = None


class ArtifactsRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A page of the artifacts of one task."""

    task_id: str
    limit: int = 1000
    cursor: str | None = None


class ArtifactsReply(msgspec.Struct, frozen=True, kw_only=True):
    """A page of a task's artifacts, oldest first."""

    artifacts: list[ArtifactView]
    next_cursor: str | None = None
    total: int | None = None


class ArtifactStoreReply(msgspec.Struct, frozen=True, kw_only=True):
    """Where the coordinator keeps artifacts, so a CLI left unconfigured reads and writes the same store.

    Holds no secret: MinIO credentials stay in environment variables on each machine.
    """

    settings: ArtifactSettings


class QuarantineListRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Newest quarantined events first, optionally of one task."""

    task_id: str | None = None
    limit: int = 50


class QuarantineListReply(msgspec.Struct, frozen=True, kw_only=True):
    """Quarantined events, newest first (each with at most its first 512 bytes)."""

    events: list[QuarantinedEvent]


class Empty(msgspec.Struct, frozen=True):
    """A request with no arguments."""


class NodeControlRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`claw node pause|drain|resume ID`: the state the node should be in."""

    node_id: str
    control: NodeControl
    by: str | None = None


class NodeControlReply(msgspec.Struct, frozen=True, kw_only=True):
    """The recorded desired state, and what the node does: as it answered at once (`confirmed`), or
    as last known when it did not answer (it is offline; it follows the state when it returns)."""

    node_id: str
    control: NodeControl
    status: NodeStatus
    running: int
    confirmed: bool
    changed: bool


# --- flow control (docs/Flow_control.md) ----------------------------------------------------------


class LimitsSetRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`claw limits set KEY ...`: the key's whole limit (bounds not given are unlimited)."""

    limit: Limit


class LimitsDeleteRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`claw limits delete KEY`."""

    key: str


class LimitsListRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`claw limits list`: every key with a limit or live use."""


class LimitView(msgspec.Struct, frozen=True, kw_only=True):
    """A key's limit and its live use, as the coordinator sees it now."""

    key: str
    limit: Limit | None = None
    in_flight: int = 0
    requests_last_minute: int = 0
    tokens_last_minute: int = 0
    waiting: int = 0
    cooldown_s: float = 0.0
    cooldown_reason: str = ""
    breaker: str = "closed"
    consecutive_failures: int = 0


class LimitsReply(msgspec.Struct, frozen=True, kw_only=True):
    """Keys and their use, sorted by key."""

    limits: list[LimitView]


class PermitAcquireRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A handler's `ctx.limit(key, tokens=...)`: one call's permit on `key` (waits up to `wait_s`)."""

    key: str
    task_id: str
    node_id: str
    tokens: Annotated[int, msgspec.Meta(ge=0)] = 0
    wait_s: Annotated[float, msgspec.Meta(ge=0, le=300)] = 30.0


class PermitReply(msgspec.Struct, frozen=True, kw_only=True):
    """A granted permit (`permit_id`), or none yet: `retry_in_s` says when room may appear."""

    permit_id: str | None = None
    retry_in_s: float = 0.0
    reason: str = ""


class PermitReleaseRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The end of a call: the permit back, with the tokens it really used (reconciling TPM)."""

    permit_id: str
    input_tokens: Annotated[int, msgspec.Meta(ge=0)] = 0
    output_tokens: Annotated[int, msgspec.Meta(ge=0)] = 0
    failure: str | None = None
    retry_after_s: float | None = None
    # The node giving it back (on an authenticated bus, the caller's node whatever it says): only the
    # node that took a permit may return it. Empty: not said (an older worker).
    node_id: str = ""


class UsageRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`claw usage [--by tenant,model] [--since 24h]`."""

    by: list[str] = msgspec.field(default_factory=lambda: ["tenant", "skill", "model"])
    since_s: Annotated[float, msgspec.Meta(gt=0)] = 86400.0


class UsageRow(msgspec.Struct, frozen=True, kw_only=True):
    """Usage of one group (the `by` fields not grouped on are empty)."""

    tenant: str = ""
    skill: str = ""
    model: str = ""
    hour: float | None = None
    calls: int = 0
    errors: dict[str, int] = {}
    input_tokens: int = 0
    output_tokens: int = 0
    cache_hits: int = 0
    cost: float = 0.0


class UsageReply(msgspec.Struct, frozen=True, kw_only=True):
    """Usage rows, largest call count first."""

    rows: list[UsageRow]
    since: float


class CacheStatsReply(msgspec.Struct, frozen=True, kw_only=True):
    """`claw cache stats`: the response cache's entries and size, and its hits in the last 24 h."""

    bucket: str
    entries: int
    bytes: int
    hits_24h: int


class CacheClearReply(msgspec.Struct, frozen=True, kw_only=True):
    """`claw cache clear`: how many entries were dropped."""

    cleared: int


# --- workflows (coordinator/workflows, docs/Workflows.md) -------------------------------------------


class WorkflowSpecRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`claw workflow validate|register FILE`: the spec's text (YAML or JSON) and where it came from."""

    spec: str
    source: str = ""
    registered_by: str | None = None


class WorkflowValidateReply(msgspec.Struct, frozen=True, kw_only=True):
    """A valid workflow: its nodes in a dependency order and what each needs."""

    name: str
    order: list[str]
    needs: dict[str, list[str]]
    trigger: str | None = None


class WorkflowRegisterReply(msgspec.Struct, frozen=True, kw_only=True):
    """The registered version (`unchanged`: the spec equals the latest version, nothing registered)."""

    name: str
    version: int
    order: list[str]
    unchanged: bool = False


class WorkflowRunRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`claw workflow run NAME`: start a run (again with the same `run_id`: the existing run)."""

    name: str
    input: msgspec.Raw = EMPTY_OBJECT
    version: int | None = None
    run_id: str | None = None
    submitter: str | None = None
    # Whose run it is (unset: `default`): its node tasks are that tenant's (quotas, fair share, usage).
    tenant: str | None = None


class WorkflowRunReply(msgspec.Struct, frozen=True, kw_only=True):
    """The run started (or the existing one, `duplicate`)."""

    run_id: str
    name: str
    version: int
    state: str
    duplicate: bool = False


class WorkflowRerunRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`claw workflow rerun RUN --from NODE`: a new run reusing every output upstream of NODE."""

    run_id: str
    from_node: str
    input: msgspec.Raw | None = None
    version: int | None = None
    submitter: str | None = None


class WorkflowRunGetRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One run (`claw workflow show|watch RUN`)."""

    run_id: str


class WorkflowCancelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`claw workflow cancel RUN`."""

    run_id: str
    reason: str = ""
    by: str | None = None


class WorkflowNodeView(msgspec.Struct, frozen=True, kw_only=True):
    """One node of a run: its state, its task(s), how long, what it gave, what it waits for."""

    name: str
    skill: str
    state: str
    needs: list[str]
    task_ids: list[str]
    # Task states, one per task (a fan-out has one per item dispatched so far).
    task_states: list[str] = []
    items: int | None = None
    items_done: int = 0
    attempts: int = 0
    # run: ran in this run; reused: an earlier run's output (rerun); cached: memoised (cache: true).
    source: str = "run"
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    error: str | None = None
    output_summary: str = ""
    # What the node waits for: upstream nodes, or `approval` of its task.
    waits_for: list[str] = []


class WorkflowRunView(msgspec.Struct, frozen=True, kw_only=True):
    """A run and its nodes, in dependency order."""

    run_id: str
    name: str
    version: int
    state: str
    input: msgspec.Raw = EMPTY_OBJECT
    created_at: float
    updated_at: float
    finished_at: float | None = None
    error: str | None = None
    rerun_of: str | None = None
    from_node: str | None = None
    trigger: str | None = None
    submitter: str | None = None
    trace_id: str | None = None
    nodes: list[WorkflowNodeView] = []
    tenant: str = "default"


class WorkflowListRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`claw workflow list`: registered workflows and the newest runs (of one workflow, in one state)."""

    name: str | None = None
    state: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50


class WorkflowSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A registered workflow at its latest version."""

    name: str
    version: int
    nodes: int
    registered_at: float
    trigger: str | None = None
    description: str = ""


class WorkflowRunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One run in a list."""

    run_id: str
    name: str
    version: int
    state: str
    created_at: float
    finished_at: float | None = None
    error: str | None = None


class WorkflowListReply(msgspec.Struct, frozen=True, kw_only=True):
    """Workflows by name, runs newest first."""

    workflows: list[WorkflowSummary]
    runs: list[WorkflowRunSummary]


# --- schedules and triggers (issue 13: 4; docs/Scheduling.md) ---------------------------------------

ScheduleName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")]
# The tail of a fire id chosen by a caller (`trigger --key`, a webhook's event id): the characters a
# workflow run id may hold, since the fire id becomes the run id.
FireKey = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9:._+-]{1,128}\Z")]


class ScheduleCreateRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`claw schedules create NAME`: when it fires (exactly one of `cron`, `every_s`, `on_subject`,
    `on_artifact`, `on_event`) and what it starts (exactly one of `workflow`, `skill`)."""

    name: ScheduleName
    cron: str | None = None
    tz: str = "UTC"
    every_s: float | None = None
    # A subject under `<prefix>.trigger.` (wildcards allowed): each message published there fires it.
    on_subject: str | None = None
    # An artifact name prefix: each new artifact whose name starts with it fires it.
    on_artifact: str | None = None
    # Fired only by hand (`claw schedules trigger`) or by `schedule_event` (the gateway's webhooks).
    on_event: bool = False
    workflow: str | None = None
    workflow_version: int | None = None
    skill: str | None = None
    input: msgspec.Raw = EMPTY_OBJECT
    priority: Priority = Priority.NORMAL
    # skip | once | all (coordinator/schedules/timing.py).
    missed: str = "skip"
    max_catchup: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 10
    paused: bool = False
    by: str | None = None
    # The tenant its fires submit tasks or start runs for (unset: `default`).
    tenant: str | None = None
    # Who besides its creator may fire an `on_subject` schedule by publishing a trigger message:
    # identity names, or `role:<API role>` (e.g. `role:operator`). Empty: its creator only.
    trigger_allow: list[str] = []
    # Create it though no worker offers `skill` and no installed skill has that name (a worker
    # will bring it later); otherwise such a schedule is refused, naming the skill.
    allow_unknown_skill: bool = False


class ScheduleView(msgspec.Struct, frozen=True, kw_only=True):
    """A schedule as stored, with its next fire time (None for event triggers and paused ones)."""

    name: str
    kind: str
    rule: str
    target_kind: str
    target: str
    input: msgspec.Raw
    priority: Priority
    missed: str
    max_catchup: int
    paused: bool
    next_fire_at: float | None
    last_fire_at: float | None
    last_fire_id: str | None
    fires: int
    created_at: float
    created_by: str | None
    tenant: str = "default"
    # Who besides its creator may fire it by a trigger message (`ScheduleCreateRequest.trigger_allow`).
    trigger_allow: list[str] = []


class ScheduleFireView(msgspec.Struct, frozen=True, kw_only=True):
    """One fire: its id, the time it was for (None for events), why, and the task or run it started."""

    fire_id: str
    schedule: str
    fire_time: float | None
    fired_at: float
    reason: str
    target_id: str | None
    duplicate: bool = False
    error: str | None = None
    # Who caused it: a trigger message's publisher, the identity that fired by hand (None: time).
    by: str | None = None


class ScheduleListRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Every schedule (there are few), by name."""


class ScheduleListReply(msgspec.Struct, frozen=True, kw_only=True):
    """Every schedule, by name."""

    schedules: list[ScheduleView]


class ScheduleNameRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request naming one schedule (show, delete, pause, resume)."""

    name: str
    by: str | None = None


class ScheduleShowReply(msgspec.Struct, frozen=True, kw_only=True):
    """One schedule, its next fire times and its newest fires."""

    schedule: ScheduleView
    upcoming: list[float]
    fires: list[ScheduleFireView]


class ScheduleTriggerRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`claw schedules trigger NAME`: fire now, by hand. `key` makes a retried trigger fire once."""

    name: str
    key: FireKey | None = None
    by: str | None = None


class ScheduleEventRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An outside event (a webhook, through the gateway) for a schedule: `event_id` is the sender's
    delivery id, so a redelivered webhook fires once; `data` is passed to the target."""

    name: str
    event_id: FireKey
    data: msgspec.Raw = JSON_NULL


class ScheduleFireReply(msgspec.Struct, frozen=True, kw_only=True):
    """The fire a trigger or event caused (`duplicate` when that fire had happened already)."""

    fire: ScheduleFireView


# Flow control's response cache (issue 11 / 12 item 6): workers report answers, the coordinator writes them.
class CachePutRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A worker's report of an llm.chat answer to cache: the coordinator recomputes the key from the
    task's stored input and tenant, and writes the entry only for the node holding `attempt`."""

    task_id: str
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    # The model the call used: the task's own, or one of its `fallback_models`.
    model: str
    ttl_s: Annotated[float, msgspec.Meta(gt=0)]
    result: msgspec.Raw
    # The reporting node (on an authenticated bus, the caller's node whatever it says).
    node_id: str = ""


class CachePutReply(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the entry was written, and its key."""

    stored: bool
    key: str = ""
