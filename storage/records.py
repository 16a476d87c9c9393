"""Row shapes of the state database, as mutable records the coordinator updates in memory.

The coordinator changes a task's record event by event and writes the record's final image once per
batch (`TaskWriter.write_batch`), so two events for one task in one batch cost one UPDATE and the
order of statements inside a batch never matters.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from common.event_kinds import EventKind
from common.states import AttemptState, Priority, TaskState

_json = msgspec.json.Encoder()


@dataclass(slots=True)
class TaskRecord:
    """One row of `tasks`."""

    task_id: str
    skill: str
    priority: Priority
    state: TaskState
    input: str
    max_attempts: int
    timeout_s: float
    created_at: float
    updated_at: float
    idempotency_key: str | None = None
    attempts: int = 0
    attempt_offset: int = 0
    submitter: str | None = None
    node_id: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    trace_id: str | None = None
    stream_seq: int | None = None
    next_attempt_at: float | None = None
    # The task's Backoff as JSON (None: the cluster default at the time of publishing).
    backoff: str | None = None
    fenced_through: int = 0
    risk: str | None = None
    guard_rule: str | None = None
    approvals_needed: int = 0
    held_until: float | None = None
    traceparent: str | None = None
    # Who the task is for (quotas, fair share, usage); decided at submit (coordinator/tenants).
    tenant: str = "default"
    # Flow control: the task's own limit keys as JSON (`{"keys": [...]}`), None when it adds none.
    flow: str | None = None
    # Runtime only, set by flow control's gate before publishing: the task's FlowTicket.
    flow_ticket: Any = None
    # Runtime only (kept in task_attempts): where to NAK the current attempt if its node dies.
    ack_subject: str | None = None
    # Runtime only, set by admission: the guard denied the task (with this reason).
    denied: str | None = None
    # Runtime only: the coordinator's span of this task while it is admitted and published.
    span: Any = None
    # Runtime only: the fair-share dispatcher holds the task back (it is pending, not published).
    held_for_share: bool = False
    # Runtime only, set by admission: the client chose the id (it may exist already); an id the
    # coordinator made itself is a fresh ULID and needs no lookup.
    id_from_client: bool = False

    def insert_row(self) -> tuple[object, ...]:
        """Parameters for `TaskWriter`'s INSERT_TASK."""
        return (
            self.task_id,
            self.skill,
            self.priority.value,
            self.state.value,
            self.input,
            self.idempotency_key,
            self.attempts,
            self.max_attempts,
            self.timeout_s,
            self.attempt_offset,
            self.submitter,
            self.created_at,
            self.updated_at,
            self.trace_id,
            self.backoff,
            self.risk,
            self.guard_rule,
            self.approvals_needed,
            self.held_until,
            self.traceparent,
            self.tenant,
            self.flow,
        )

    def update_row(self) -> tuple[object, ...]:
        """Parameters for `TaskWriter`'s UPDATE_TASK: every column that changes after insert."""
        return (
            self.state.value,
            self.attempts,
            self.attempt_offset,
            self.node_id,
            self.queued_at,
            self.started_at,
            self.finished_at,
            self.result,
            self.error_type,
            self.error_message,
            self.error_traceback,
            self.stream_seq,
            self.next_attempt_at,
            self.fenced_through,
            self.held_until,
            self.updated_at,
            self.task_id,
        )

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TaskRecord:
        """Build from a `SELECT * FROM tasks` row."""
        return cls(
            task_id=row["task_id"],
            skill=row["skill"],
            priority=Priority(row["priority"]),
            state=TaskState(row["state"]),
            input=row["input"],
            max_attempts=row["max_attempts"],
            timeout_s=row["timeout_s"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            idempotency_key=row["idempotency_key"],
            attempts=row["attempts"],
            attempt_offset=row["attempt_offset"],
            submitter=row["submitter"],
            node_id=row["node_id"],
            queued_at=row["queued_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            result=row["result"],
            error_type=row["error_type"],
            error_message=row["error_message"],
            error_traceback=row["error_traceback"],
            trace_id=row["trace_id"],
            stream_seq=row["stream_seq"],
            next_attempt_at=row["next_attempt_at"],
            backoff=row["backoff"],
            fenced_through=row["fenced_through"],
            risk=row["risk"],
            guard_rule=row["guard_rule"],
            approvals_needed=row["approvals_needed"],
            held_until=row["held_until"],
            traceparent=row["traceparent"],
            tenant=row["tenant"],
            flow=row["flow"],
        )


@dataclass(slots=True)
class AttemptRecord:
    """One row of `task_attempts`."""

    task_id: str
    attempt: int
    node_id: str | None
    state: AttemptState
    started_at: float | None = None
    finished_at: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    ack_subject: str | None = None

    def upsert_row(self) -> tuple[object, ...]:
        """Parameters for `TaskWriter`'s UPSERT_ATTEMPT."""
        return (
            self.task_id,
            self.attempt,
            self.node_id,
            self.state.value,
            self.started_at,
            self.finished_at,
            self.error_type,
            self.error_message,
            self.error_traceback,
            self.ack_subject,
        )


@dataclass(slots=True)
class EventRecord:
    """One row of the append-only `events` log; made with `EventRecord.of`."""

    task_id: str
    kind: EventKind
    at: float
    attempt: int = 0
    event_id: str | None = None
    from_state: TaskState | None = None
    to_state: TaskState | None = None
    node_id: str | None = None
    data: str | None = None

    @classmethod
    def of(
        cls,
        kind: EventKind,
        task_id: str,
        at: float,
        *,
        attempt: int = 0,
        event_id: str | None = None,
        node_id: str | None = None,
        from_state: TaskState | None = None,
        to_state: TaskState | None = None,
        data: Mapping[str, object] | None = None,
    ) -> EventRecord:
        """The one way rows are made: `data` becomes the row's JSON, fields that are None left out."""
        encoded = None if data is None else _json.encode({k: v for k, v in data.items() if v is not None}).decode()
        return cls(task_id, kind, at, attempt, event_id, from_state, to_state, node_id, encoded)

    def insert_row(self) -> tuple[object, ...]:
        """Parameters for `TaskWriter`'s INSERT_EVENT."""
        return (
            self.event_id,
            self.task_id,
            self.attempt,
            str(self.kind),
            None if self.from_state is None else self.from_state.value,
            None if self.to_state is None else self.to_state.value,
            self.node_id,
            self.at,
            self.data,
        )


@dataclass(slots=True)
class QuarantineRecord:
    """One row of `quarantine`: a task event set aside because it could not be decoded or folded."""

    at: float
    subject: str
    stream_seq: int | None
    task_id: str | None
    kind: str | None
    reason: str
    size: int
    data: bytes

    def insert_row(self) -> tuple[object, ...]:
        """Parameters for `quarantine_store.INSERT_QUARANTINE`."""
        return (self.at, self.subject, self.stream_seq, self.task_id, self.kind, self.reason, self.size, self.data)


@dataclass(slots=True)
class WriteBatch:
    """Everything one coordinator step writes, committed as one transaction."""

    new_tasks: list[TaskRecord] = field(default_factory=list)
    changed_tasks: dict[str, TaskRecord] = field(default_factory=dict)
    attempts: dict[tuple[str, int], AttemptRecord] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    # Tasks that ended dead in this batch: their dead letters are published after the commit.
    dead_letters: list[TaskRecord] = field(default_factory=list)
    # Cancelled tasks a worker started anyway (it missed the broadcast): cancel them again.
    recancel: list[TaskRecord] = field(default_factory=list)
    # Artifact rows: (task_id, attempt, name, size, sha256, content_type, backend, key, created_at, expires_at).
    artifacts: list[tuple[object, ...]] = field(default_factory=list)
    # Approval decisions: (task_id, approver, decision, note, at).
    approvals: list[tuple[str, str, str, str | None, float]] = field(default_factory=list)
    # Events that could not be decoded or folded.
    quarantined: list[QuarantineRecord] = field(default_factory=list)
    # Rows of a feature's own tables, written in the same transaction: (SQL, parameter rows), in
    # order (coordinator/workflows: runs and node runs beside their event-log rows).
    statements: list[tuple[str, list[tuple[object, ...]]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.new_tasks
            or self.changed_tasks
            or self.attempts
            or self.events
            or self.approvals
            or self.artifacts
            or self.quarantined
            or self.statements
        )

    def absorb(self, other: WriteBatch) -> None:
        """Add everything staged in `other` after what is staged here (as if staged here directly)."""
        # Once per folded event: most parts are empty, and testing is cheaper than extending.
        if other.new_tasks:
            self.new_tasks += other.new_tasks
        if other.changed_tasks:
            self.changed_tasks.update(other.changed_tasks)
        if other.attempts:
            self.attempts.update(other.attempts)
        if other.events:
            self.events += other.events
        if other.dead_letters:
            self.dead_letters += other.dead_letters
        if other.recancel:
            self.recancel += other.recancel
        if other.artifacts:
            self.artifacts += other.artifacts
        if other.approvals:
            self.approvals += other.approvals
        if other.quarantined:
            self.quarantined += other.quarantined
        if other.statements:
            self.statements += other.statements

    def touch(self, record: TaskRecord) -> None:
        """Mark a task's record as changed (its final image is written at commit)."""
        self.changed_tasks[record.task_id] = record

    def put_attempt(self, record: AttemptRecord) -> None:
        """Stage an attempt's final image."""
        self.attempts[(record.task_id, record.attempt)] = record
