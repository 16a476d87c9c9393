"""Event-log kinds are one enum whose values are the strings existing databases hold."""

from __future__ import annotations

from common.event_kinds import EventKind
from common.events import TaskCancelled, TaskFailed, TaskStarted, TaskSucceeded
from common.states import NodeControl
from coordinator.alerts import ALERT_NAMES
from storage.records import EventRecord

# Every kind the coordinator wrote before the enum existed, as it wrote it (and databases keep it):
# a changed value would split one kind in two across an upgrade and break `claw task show` filters.
STORED_BEFORE = {
    "submitted", "held", "denied", "released", "rejected", "expired", "approved", "queued", "started",
    "started (implied)", "succeeded", "retrying", "failed", "dead", "lost", "cancelled", "attempt cancelled",
    "unpublishable", "requeued", "retry", "replayed", "progress", "log", "verifying", "artifact",
    "started (ignored)", "succeeded (ignored)", "failed (ignored)", "cancelled (ignored)",
    "alert.completion_rate", "alert.failure_rate", "alert.resolved",
    "node.active", "node.paused", "node.drained",
    "skill.registered", "skill.installed", "skill.enabled", "skill.disabled",
    # Added since: tenants (coordinator/tenants).
    "waiting for tenant share",
}  # fmt: skip
# Kinds added since, each with its feature (appended, one line per feature).
STORED_BEFORE |= {"skill.risk_lowered"}  # trust-audit: a lowered risk installed with --allow-risk-change
# Added by flow control (issue 12).
FLOW_KINDS = {"waiting for limit", "needs input", "limit granted", "usage", "limit.set", "limit.deleted"}


# Workflows (coordinator/workflows).
WORKFLOW_KINDS = {
    "workflow.registered", "workflow.run_started", "workflow.node_started", "workflow.node_succeeded",
    "workflow.node_failed", "workflow.node_skipped", "workflow.node_reused", "workflow.run_succeeded",
    "workflow.run_failed", "workflow.run_cancelled",
}  # fmt: skip
# Schedules (coordinator/schedules).
SCHEDULE_KINDS = {"schedule.created", "schedule.deleted", "schedule.paused", "schedule.resumed", "schedule.fired"}


def test_the_members_are_exactly_the_strings_stored_before() -> None:
    assert {kind.value for kind in EventKind} == STORED_BEFORE | FLOW_KINDS | WORKFLOW_KINDS | SCHEDULE_KINDS
    assert EventKind("attempt cancelled") is EventKind.ATTEMPT_CANCELLED  # the one with a space


def test_kinds_derived_from_other_names_are_members() -> None:
    # A worker's report that changed nothing is recorded as `<its kind> (ignored)`.
    for event in (TaskStarted, TaskSucceeded, TaskFailed, TaskCancelled):
        reported = event.__name__.removeprefix("Task").lower()
        assert EventKind.ignored(reported).value == f"{reported} (ignored)"
    assert {EventKind.node_control(c) for c in NodeControl} == {
        EventKind.NODE_ACTIVE,
        EventKind.NODE_PAUSED,
        EventKind.NODE_DRAINED,
    }
    assert {EventKind.alert(name) for name in ALERT_NAMES} == {
        EventKind.ALERT_COMPLETION_RATE,
        EventKind.ALERT_FAILURE_RATE,
    }


def test_a_kind_is_stored_as_its_plain_string() -> None:
    row = EventRecord.of(EventKind.ATTEMPT_CANCELLED, "t1", 1.0, data={"by": None, "n": 1}).insert_row()
    assert type(row[3]) is str and row[3] == "attempt cancelled"
    assert row[8] == '{"n":1}'  # data: None fields left out
