"""The one table of legal task state transitions, and the function every state change goes through.

Nothing else in the project assigns `TaskRecord.state`: `transition` checks the table, stamps the
record and returns the event-log row that records the change. An illegal change raises
`IllegalTransitionError` (callers log it and leave the task as it was).
"""

from __future__ import annotations

from collections.abc import Mapping

from common.errors import IllegalTransitionError
from common.event_kinds import EventKind
from common.states import TaskState
from storage.records import EventRecord, TaskRecord

S = TaskState

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    # Admitted and persisted; published next (or held for approval, or refused by the guard).
    # FAILED when its message can never be published (larger than the server's max_payload).
    S.PENDING: frozenset({S.QUEUED, S.WAITING_APPROVAL, S.REJECTED, S.CANCELLED, S.FAILED}),
    S.WAITING_APPROVAL: frozenset({S.PENDING, S.REJECTED, S.CANCELLED}),
    # In the stream; DEAD when it cannot run at all (undecodable, expired).
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.DEAD}),
    # QUEUED again when its attempt was lost (worker died) and JetStream will redeliver it.
    # NEEDS_INPUT: its attempt failed for a reason a person must fix (flow control's escalation).
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.RETRYING, S.DEAD, S.CANCELLED, S.QUEUED, S.NEEDS_INPUT}),
    S.RETRYING: frozenset({S.RUNNING, S.CANCELLED, S.DEAD}),
    S.SUCCEEDED: frozenset(),
    S.REJECTED: frozenset(),
    # A finished task run again (`claw task retry`, DLQ replay) starts a new series from PENDING.
    S.FAILED: frozenset({S.PENDING}),
    S.DEAD: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING}),
    # Until a person acts: `claw task retry` (a new series) or `claw task cancel`.
    S.NEEDS_INPUT: frozenset({S.PENDING, S.CANCELLED}),
}

assert set(TRANSITIONS) == set(TaskState), "every state needs a row in the transition table"


def can_transition(from_state: TaskState, to_state: TaskState) -> bool:
    """Whether the table allows `from_state -> to_state`."""
    return to_state in TRANSITIONS[from_state]


def transition(
    record: TaskRecord,
    to_state: TaskState,
    *,
    at: float,
    kind: EventKind,
    attempt: int | None = None,
    node_id: str | None = None,
    event_id: str | None = None,
    data: Mapping[str, object] | None = None,
) -> EventRecord:
    """Move `record` to `to_state` and return the event-log row for the change.

    `kind` names why (submitted, queued, started, succeeded, failed, lost, ...).
    """
    from_state = record.state
    if not can_transition(from_state, to_state):
        raise IllegalTransitionError(
            f"task {record.task_id}: {from_state.value} -> {to_state.value} ({kind}) is not a legal transition"
        )
    record.state = to_state
    record.updated_at = at
    if attempt is None:
        attempt = record.attempts
    if data is None:
        # Several times per task: the row itself, without `EventRecord.of`'s keyword handling.
        return EventRecord(record.task_id, kind, at, attempt, event_id, from_state, to_state, node_id)
    return EventRecord.of(
        kind,
        record.task_id,
        at,
        attempt=attempt,
        event_id=event_id,
        from_state=from_state,
        to_state=to_state,
        node_id=node_id,
        data=data,
    )
