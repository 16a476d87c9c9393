"""The names of task, attempt and node states, and task priorities.

Which task state may follow which is decided by the transition table in `coordinator.state_machine`;
this module only names the states so that every package spells them the same way.
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    """Where a task is in its life (DESIGN.md, "Task states")."""

    PENDING = "pending"
    WAITING_APPROVAL = "waiting_approval"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    # Flow control's escalation: it failed for a reason a person must fix (docs/Flow_control.md);
    # it ended like `failed`, and `claw attention` lists it until someone retries or cancels it.
    NEEDS_INPUT = "needs_input"


TERMINAL_STATES = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.DEAD,
        TaskState.CANCELLED,
        TaskState.REJECTED,
        TaskState.NEEDS_INPUT,
    }
)


class AttemptState(StrEnum):
    """How one attempt (one delivery that started running) ended."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"
    CANCELLED = "cancelled"
    # The API it called answered "too many requests" (HTTP 429): pushed back, not failed (flow control).
    RATE_LIMITED = "rate_limited"


class Priority(StrEnum):
    """Queue priority; workers drain high before normal before low."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


PRIORITIES: tuple[Priority, ...] = (Priority.HIGH, Priority.NORMAL, Priority.LOW)


class NodeStatus(StrEnum):
    """A worker node as the coordinator sees it (what the node does, reported in its heartbeats).

    `paused`: it pulls nothing (running tasks finish); `draining`: it pulls nothing and still runs
    tasks; `drained`: a draining node whose tasks all ended; `stopping`: it is shutting down.
    """

    ONLINE = "online"
    PAUSED = "paused"
    DRAINING = "draining"
    DRAINED = "drained"
    STOPPING = "stopping"
    OFFLINE = "offline"


class NodeControl(StrEnum):
    """What the coordinator asks of a worker node (`claw node pause|drain|resume`); it keeps this
    desired state, and the node reports what it does (`NodeStatus`)."""

    ACTIVE = "active"
    PAUSED = "paused"
    DRAINED = "drained"
