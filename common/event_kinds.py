"""The kinds of rows in the event log (`events.kind`): every one the coordinator writes, by name.

The values are the strings stored in existing databases and covered by the event log's hash chain,
so they never change (one has a space, `attempt cancelled`; the kinds derived from another end in
` (ignored)`). A new kind is a new member; `EventKind(text)` refuses a string that is none of them.
"""

from __future__ import annotations

from enum import StrEnum

from common.states import NodeControl

IGNORED_SUFFIX = " (ignored)"


class EventKind(StrEnum):
    """Why an event-log row was written; a task's own rows first, then the cluster's."""

    # A task's life: each moves the task from one state to another (`from_state` -> `to_state`).
    SUBMITTED = "submitted"
    HELD = "held"
    DENIED = "denied"
    RELEASED = "released"
    REJECTED = "rejected"
    EXPIRED = "expired"
    QUEUED = "queued"
    STARTED = "started"
    STARTED_IMPLIED = "started (implied)"
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    DEAD = "dead"
    LOST = "lost"
    CANCELLED = "cancelled"
    UNPUBLISHABLE = "unpublishable"
    # A finished task run again; the row's `attempt` is the attempt offset of the new series.
    RETRY = "retry"
    REPLAYED = "replayed"

    # Notes on a task that change no state.
    PROGRESS = "progress"
    LOG = "log"
    VERIFYING = "verifying"
    ARTIFACT = "artifact"
    APPROVED = "approved"
    REQUEUED = "requeued"
    ATTEMPT_CANCELLED = "attempt cancelled"
    # A worker's report that changed nothing (an older attempt's, or one for a finished task).
    STARTED_IGNORED = "started (ignored)"
    SUCCEEDED_IGNORED = "succeeded (ignored)"
    FAILED_IGNORED = "failed (ignored)"
    CANCELLED_IGNORED = "cancelled (ignored)"

    # The cluster's own rows, under pseudo task ids (`cluster:alerts`, `node:<id>`, `skill:<name>`).
    ALERT_COMPLETION_RATE = "alert.completion_rate"
    ALERT_FAILURE_RATE = "alert.failure_rate"
    ALERT_RESOLVED = "alert.resolved"
    NODE_ACTIVE = "node.active"
    NODE_PAUSED = "node.paused"
    NODE_DRAINED = "node.drained"
    SKILL_REGISTERED = "skill.registered"
    SKILL_INSTALLED = "skill.installed"
    SKILL_ENABLED = "skill.enabled"
    SKILL_DISABLED = "skill.disabled"
    # Trust (issue 11, item 4): an admin installed a version declaring a lower risk than an earlier
    # version did, with `--allow-risk-change` (data: from_risk, to_risk, the version it lowers from, by).
    SKILL_RISK_LOWERED = "skill.risk_lowered"
    # Tenants (issue 12, item 8): a task the fair-share dispatcher holds back (no state change).
    TENANT_WAIT = "waiting for tenant share"

    # Flow control (docs/Flow_control.md): a task's notes, then the cluster's rows (`limit:<key>`).
    WAITING_LIMIT = "waiting for limit"
    NEEDS_INPUT = "needs input"
    LIMIT_GRANTED = "limit granted"
    USAGE = "usage"
    LIMIT_SET = "limit.set"
    LIMIT_DELETED = "limit.deleted"

    # Workflows (coordinator/workflows), under `workflow:<name>` and `run:<run id>`.
    WORKFLOW_REGISTERED = "workflow.registered"
    WORKFLOW_RUN_STARTED = "workflow.run_started"
    WORKFLOW_NODE_STARTED = "workflow.node_started"
    WORKFLOW_NODE_SUCCEEDED = "workflow.node_succeeded"
    WORKFLOW_NODE_FAILED = "workflow.node_failed"
    WORKFLOW_NODE_SKIPPED = "workflow.node_skipped"
    WORKFLOW_NODE_REUSED = "workflow.node_reused"
    WORKFLOW_RUN_SUCCEEDED = "workflow.run_succeeded"
    WORKFLOW_RUN_FAILED = "workflow.run_failed"
    WORKFLOW_RUN_CANCELLED = "workflow.run_cancelled"

    # Schedules (coordinator/schedules/), under `schedule:<name>`: what changed them and every fire.
    SCHEDULE_CREATED = "schedule.created"
    SCHEDULE_DELETED = "schedule.deleted"
    SCHEDULE_PAUSED = "schedule.paused"
    SCHEDULE_RESUMED = "schedule.resumed"
    SCHEDULE_FIRED = "schedule.fired"

    @classmethod
    def ignored(cls, reported: str) -> EventKind:
        """The kind recording that a worker's `reported` event (started, succeeded, ...) changed nothing."""
        return cls(reported + IGNORED_SUFFIX)

    @classmethod
    def alert(cls, name: str) -> EventKind:
        """The kind recording that the alert `name` started firing."""
        return cls(f"alert.{name}")

    @classmethod
    def node_control(cls, control: NodeControl) -> EventKind:
        """The kind recording that a node's desired state was set to `control`."""
        return cls(f"node.{control.value}")


# The kinds that start a new series of attempts (`claw task retry`, DLQ replay).
RERUN_KINDS = (EventKind.RETRY, EventKind.REPLAYED)
