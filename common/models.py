"""Wire messages shared by coordinator, workers and clients.

Every message is a msgspec Struct encoded as JSON. Rules for evolving them (msgspec's schema-evolution
guide): a new field gets a default, a field never changes type, and decoders skip unknown fields, so
an older worker and a newer coordinator understand each other. `v` is the schema version of the
message family; it is bumped only for a change old readers must refuse.

Task inputs and results are kept as `msgspec.Raw`: the coordinator stores and forwards the exact bytes
the client sent without parsing them again.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from common.flow import FlowTicket
from common.states import AttemptState, NodeControl, NodeStatus, Priority, TaskState

SCHEMA_VERSION = 1
EMPTY_OBJECT = msgspec.Raw(b"{}")
# msgspec cannot put Raw in a union with None: JSON null stands for "none" in Raw fields.
JSON_NULL = msgspec.Raw(b"null")


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """How long to wait before retrying a failed attempt: exponential, capped, with jitter.

    The delay before attempt n+1 is `base_s * factor**(n-1)`, at most `max_s`, then scaled by a random
    factor in `[1 - jitter, 1 + jitter]` so that tasks failing together do not retry together.
    """

    base_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 1.0
    factor: Annotated[float, msgspec.Meta(ge=1, le=100)] = 2.0
    max_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 300.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2

    def delay_s(self, failed_attempt: int, unit_random: float) -> float:
        """The delay after attempt `failed_attempt` (1-based); `unit_random` is uniform in [0, 1)."""
        raw = min(self.base_s * self.factor ** max(failed_attempt - 1, 0), self.max_s)
        return max(raw * (1 + self.jitter * (2 * unit_random - 1)), 0.0)


class ArtifactRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where an artifact's bytes are: content-addressed (`key` derives from `sha256`) in `backend`."""

    name: str
    sha256: str
    size: Annotated[int, msgspec.Meta(ge=0, le=2**62)]  # within SQLite's integers
    content_type: str = "application/octet-stream"
    backend: str
    key: str


# An input or result kept as an artifact is stored, in the task's JSON, as {ARTIFACT_MARKER: ref}.
ARTIFACT_MARKER = "$artifact"
# An input or result left out of a reply or a dead letter because it would not fit one NATS message
# stands there as {OMITTED_MARKER: {"bytes": size}}; the database still holds it whole.
OMITTED_MARKER = "$omitted"
# The artifact names of an input and a result that travel by reference.
INPUT_ARTIFACT = "input.json"
RESULT_ARTIFACT = "result.json"


class ArtifactView(msgspec.Struct, frozen=True, kw_only=True):
    """An artifact's metadata row (`claw artifacts list`)."""

    task_id: str
    attempt: int
    name: str
    size: int
    sha256: str
    content_type: str
    backend: str
    key: str
    created_at: float
    expires_at: float | None = None


class TaskSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a client asks the cluster to run; unset options take the skill's or cluster's defaults.

    `task_id` lets a client choose the id (a ULID) so that retrying a submit whose answer was lost is
    safe: a second submit with the same id returns the existing task.
    """

    skill: str
    input: msgspec.Raw = EMPTY_OBJECT
    priority: Priority = Priority.NORMAL
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    backoff: Backoff | None = None
    task_id: Annotated[str, msgspec.Meta(pattern="^[0-9A-HJKMNP-TV-Z]{26}\\Z")] | None = None
    # A large input, already put in the artifact store by the client (then `input` is `{}`).
    input_ref: ArtifactRef | None = None
    # Flow control (docs/Flow_control.md): limit keys this task uses besides its skill's.
    limit_keys: list[str] = []


class TaskMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A task as published on `<prefix>.tasks.<priority>.<skill>` for workers to pull.

    The attempt number of a delivery is `attempt_offset + num_delivered`; `attempt_offset` counts the
    attempts of earlier series when a finished task is run again.
    """

    v: int = SCHEMA_VERSION
    task_id: str
    skill: str
    input: msgspec.Raw
    priority: Priority
    timeout_s: float
    max_attempts: int
    attempt_offset: int = 0
    submitted_at: float
    backoff: Backoff = Backoff()
    # Set when the input is an artifact: the worker fetches it and hands the handler its content.
    input_ref: ArtifactRef | None = None
    # Flow control: the limit keys the task holds (None: it uses none; docs/Flow_control.md).
    flow: FlowTicket | None = None
    # Whose task it is: what a handler keeps per tenant (the response cache) is kept apart by it.
    tenant: str = "default"


class AttemptError(msgspec.Struct, frozen=True, kw_only=True):
    """One failed (or lost) attempt, as kept in a dead letter; `series` counts the task's runs (1 for
    the first, 2 after its first retry or replay, ...)."""

    attempt: int
    series: int = 1
    node_id: str | None = None
    state: str = "failed"
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """An entry of the dead-letter stream, on `<prefix>.dlq.<skill>`.

    `kind` is `task` for a task that exhausted its attempts or failed permanently (with its input and
    every attempt's error, of every series), or `poison` for a message that could not even be decoded
    (its raw bytes, base64). A task has one letter: when it dies again after a replay, its new letter
    replaces the old one. `series` is the series that died; `input_omitted` says the input was left
    out (and tracebacks shortened) so that the letter fits one NATS message.
    """

    v: int = SCHEMA_VERSION
    kind: str
    reason: str
    dead_at: float
    skill: str
    subject: str
    task_id: str | None = None
    task: TaskMessage | None = None
    attempts: list[AttemptError] = []
    raw_base64: str | None = None
    stream_seq: int | None = None
    series: int = 1
    input_omitted: bool = False
    # The node that reported a poison message (the coordinator writes it from the report's subject).
    reported_by: str | None = None


class DeadLetterView(msgspec.Struct, frozen=True, kw_only=True):
    """A dead letter with its position in the DLQ stream (what `claw dlq list` shows)."""

    seq: int
    letter: DeadLetter


class QuarantinedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A task event the coordinator set aside because it could not be decoded or folded
    (`claw quarantine list`); `data` is its first bytes, `size` its whole length."""

    id: int
    at: float
    subject: str
    stream_seq: int | None = None
    task_id: str | None = None
    kind: str | None = None
    reason: str
    size: int
    data: bytes


class CancelNotice(msgspec.Struct, frozen=True, kw_only=True):
    """Broadcast on `<prefix>.cancel.<task_id>`: stop this task's series `series` (its attempt offset).

    A later series (`claw task retry`) has a higher offset and is not affected.
    """

    reason: str = "cancelled"
    series: int = 0


class SkillLoad(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How a worker fared with the enabled version of an installed skill, as its heartbeats report it.

    `state` is `loaded`; `failed` (`error` says why; the worker tries again with backoff, `attempts`
    counts the tries); or `skipped`: this worker may not run it (`error` says why: its labels, or
    `--skills`).
    """

    version: str
    state: str
    error: str | None = None
    attempts: int = 0


class NodeHeartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """A worker's periodic report of itself, on `<prefix>.nodes.heartbeat.<node_id>` and in KV.

    A beat with `status == offline` is the worker deregistering on a clean shutdown.
    """

    v: int = SCHEMA_VERSION
    node_id: str
    hostname: str
    pid: int
    version: str
    status: NodeStatus
    skills: list[str]
    labels: dict[str, str] = {}
    capacity: int
    running: int
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    rss_mb: float = 0.0
    load1: float = 0.0
    interval_s: float
    started_at: float
    sent_at: float
    seq: int = 0
    # The version and risk of each skill the node runs (code-registered ones have no registry entry).
    skill_versions: dict[str, str] = {}
    skill_risks: dict[str, str] = {}
    # Installed skills by name: which enabled version this node loaded, failed to load, or skipped.
    skill_loads: dict[str, SkillLoad] = {}
    # Unique to the process: the node's KV key holds the id of the one process that may beat for it.
    instance_id: str = ""
    # The control the node follows now (`claw node pause|drain|resume`).
    control: NodeControl = NodeControl.ACTIVE


class NodeCommand(msgspec.Struct, frozen=True, kw_only=True):
    """The coordinator's desired state for one node: on `<prefix>.ctl.<node_id>` (a request, answered
    with `NodeReport`) and kept in KV `<prefix>_node_control` (key: the node id), where a starting
    worker reads it, so a paused node stays paused across restarts."""

    v: int = SCHEMA_VERSION
    control: NodeControl
    changed_at: float = 0.0
    by: str | None = None


class NodeReport(msgspec.Struct, frozen=True, kw_only=True):
    """A node's answer to a `NodeCommand`: what it does now."""

    node_id: str
    control: NodeControl
    status: NodeStatus
    running: int


class DeliveryClaim(msgspec.Struct, frozen=True, array_like=True):
    """One delivery a worker has started: the task, the attempt, and the message's reply subject."""

    task_id: str
    attempt: int
    ack_subject: str


class DeliveryClaims(msgspec.Struct, frozen=True, kw_only=True):
    """The deliveries a worker started since its last such message, on `<prefix>.nodes.claims.<node_id>`.

    A short attempt sends no `started` event (it would carry the ack subject), so without these a
    worker killed in an attempt's first moments would leave the coordinator nothing to NAK: the task
    would wait out the whole ack wait. Core NATS, one message per event-loop turn of the worker; the
    coordinator keeps them raw for a few seconds and decodes them only to reclaim a dead node.
    """

    v: int = SCHEMA_VERSION
    node_id: str
    claims: list[DeliveryClaim]


class TaskUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """A committed state change, broadcast by the coordinator on `<prefix>.updates.<task_id>`.

    Clients wait on these instead of polling; they are a hint (core NATS, may be missed), the
    database stays the truth.
    """

    task_id: str
    state: TaskState
    attempt: int
    at: float


# --- read models served by the coordinator's API -------------------------------------------------


class AttemptView(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of a task: where it ran and how it ended, and in which series of attempts."""

    attempt: int
    node_id: str | None
    state: AttemptState
    started_at: float | None = None
    finished_at: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    series: int = 1


class EventView(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a task's event log."""

    id: int
    at: float
    kind: str
    attempt: int = 0
    from_state: TaskState | None = None
    to_state: TaskState | None = None
    node_id: str | None = None
    data: msgspec.Raw = JSON_NULL
    event_id: str | None = None


class TaskView(msgspec.Struct, frozen=True, kw_only=True):
    """A task's current record, with its attempts and event timeline when asked for.

    `attempts` counts every attempt of every series; `max_attempts` is per series, and the current
    series (number `series`) began after attempt `attempt_offset`. A view that would not fit one
    NATS message leaves out the oldest events (`events_omitted` says how many) and, if needed, an
    oversize input or result (replaced by `{"$omitted": {"bytes": N}}`).
    """

    task_id: str
    skill: str
    priority: Priority
    state: TaskState
    input: msgspec.Raw
    attempts: int
    max_attempts: int
    timeout_s: float
    created_at: float
    idempotency_key: str | None = None
    node_id: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: msgspec.Raw = JSON_NULL
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    trace_id: str | None = None
    next_attempt_at: float | None = None
    attempt_log: list[AttemptView] = []
    events: list[EventView] = []
    artifacts: list[ArtifactView] = []
    attempt_offset: int = 0
    series: int = 1
    events_omitted: int = 0
    # Who the task is for: quotas, fair share and usage are per tenant (docs/Flow_control.md).
    tenant: str = "default"


class TaskSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One row of `claw task list`."""

    task_id: str
    skill: str
    priority: Priority
    state: TaskState
    attempts: int
    created_at: float
    node_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    tenant: str = "default"


class NodeView(msgspec.Struct, frozen=True, kw_only=True):
    """A worker node as the coordinator's registry knows it."""

    node_id: str
    status: NodeStatus
    hostname: str
    pid: int
    version: str
    skills: list[str]
    labels: dict[str, str]
    capacity: int
    running: int
    cpu_percent: float
    memory_percent: float
    rss_mb: float
    load1: float
    started_at: float
    last_seen: float
    # From the node's last beat (empty until it beat since the coordinator started).
    skill_versions: dict[str, str] = {}
    skill_loads: dict[str, SkillLoad] = {}
    # What the coordinator asks of the node (`claw node pause|drain|resume`); `status` is what it does.
    control: NodeControl = NodeControl.ACTIVE


class QueueDepth(msgspec.Struct, frozen=True, kw_only=True):
    """What waits in one (skill, priority) consumer: not yet delivered, and delivered but unacked."""

    skill: str
    priority: Priority
    pending: int
    ack_pending: int


class NatsServerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Facts read from the nats-server monitoring port (`/varz`, `/jsz`)."""

    version: str = ""
    connections: int = 0
    in_msgs: int = 0
    out_msgs: int = 0
    jetstream_streams: int = 0
    jetstream_consumers: int = 0
    jetstream_messages: int = 0
    jetstream_bytes: int = 0
    jetstream_memory: int = 0
    monitor_url: str | None = None
    error: str | None = None


class WindowStats(msgspec.Struct, frozen=True, kw_only=True):
    """The tasks that finished in the last `window_s` seconds (by `finished_at`).

    `finished` counts every final state (succeeded, failed, dead, cancelled, rejected); the completion
    rate is succeeded / finished and the failure rate (failed + dead) / finished, None when nothing
    finished. Run times (`finished_at - started_at`, first start to end) are of the succeeded tasks.
    """

    window_s: float
    finished: int = 0
    by_state: dict[str, int] = {}
    completion_rate: float | None = None
    failure_rate: float | None = None
    run_mean_s: float | None = None
    run_p95_s: float | None = None


class AlertView(msgspec.Struct, frozen=True, kw_only=True):
    """An alert that is firing: which, since when, and the rate that crossed its threshold."""

    name: str
    message: str
    rate: float
    threshold: float
    window_s: float
    finished: int
    since: float


class StorageFaultView(msgspec.Struct, frozen=True, kw_only=True):
    """The state database refuses writes: why (e.g. the disk is full) and since when (unix time)."""

    reason: str
    since: float


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    """One of the coordinator's periodic jobs: how often it runs and how its runs went."""

    name: str
    interval_s: float
    runs: int = 0
    failures: int = 0
    # When the last run started (wall clock) and how long it took; None before the first run ends.
    last_run_at: float | None = None
    last_duration_s: float | None = None
    # The error of the last failed run and when it started; kept after later runs succeed.
    last_error: str | None = None
    last_error_at: float | None = None
    running: bool = False


class ListenerView(msgspec.Struct, frozen=True, kw_only=True):
    """One of the coordinator's after-commit listeners: how many commits it saw, failed on, missed."""

    name: str
    inline: bool
    calls: int = 0
    failures: int = 0
    # Commits dropped because its queue was full (a listener far behind): it never saw them.
    dropped: int = 0
    queued: int = 0
    last_error: str | None = None


class StandbyView(msgspec.Struct, frozen=True, kw_only=True):
    """A standby coordinator as it last reported (every second): the commit its copy holds."""

    node_id: str
    host: str
    commit_no: int
    lag_commits: int  # the active's last commit minus the standby's, as of its report
    reported_at: float


class ReplicationView(msgspec.Struct, frozen=True, kw_only=True):
    """The active coordinator's replication: its epoch (lease revision), last commit, standbys."""

    active_node_id: str
    epoch: int
    commit_no: int
    stream_seq: int
    standbys: list[StandbyView] = []


class ClusterStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The cluster at a glance: `claw status`."""

    coordinator_version: str
    nodes_online: int
    nodes_total: int
    tasks_by_state: dict[str, int]
    queues: list[QueueDepth]
    nats: NatsServerInfo
    # Added with the metrics; the defaults keep an older coordinator's reply readable.
    window: WindowStats | None = None
    dlq_messages: int | None = None
    alerts: list[AlertView] = []
    # The port of the coordinator's Prometheus endpoint, None when it serves none.
    metrics_port: int | None = None
    # The coordinator's periodic jobs and after-commit listeners (coordinator/hooks.py).
    jobs: list[JobView] = []
    listeners: list[ListenerView] = []
    # Set while the state database refuses writes (submits are refused meanwhile, with the reason).
    storage_fault: StorageFaultView | None = None
    # Replication to standby coordinators (None: off): who is active, the epoch, each standby's lag.
    replication: ReplicationView | None = None


# --- the HTTP gateway's live feed (issue 14) -------------------------------------------------------


class TaskFeed(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A task's event log grew: broadcast by the coordinator on `<prefix>.feed.<task_id>` after the
    commit, so a reader asking for the new rows finds them. A hint (core NATS, may be missed): the
    gateway's live views read the rows themselves and also look again every few seconds.

    `kinds` are the kinds of the new rows, in order; `state` is the task's state when the commit
    changed it; `percent` the last progress the rows reported, when one did.
    """

    task_id: str
    kinds: list[str]
    at: float
    state: TaskState | None = None
    percent: float | None = None
