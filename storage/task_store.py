"""Queries on tasks, attempts and the event log."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import msgspec

from common.models import JSON_NULL, AttemptError, AttemptView, EventView, TaskSummary, TaskView
from common.states import AttemptState, Priority, TaskState
from storage.database import Database, Statement
from storage.records import TaskRecord, WriteBatch

INSERT_TASK = """
INSERT INTO tasks (task_id, skill, priority, state, input, idempotency_key, attempts, max_attempts,
                   timeout_s, attempt_offset, submitter, created_at, updated_at, trace_id, backoff)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
UPDATE_TASK = """
UPDATE tasks SET state = ?, attempts = ?, attempt_offset = ?, node_id = ?, queued_at = ?, started_at = ?,
                 finished_at = ?, result = ?, error_type = ?, error_message = ?, error_traceback = ?,
                 stream_seq = ?, next_attempt_at = ?, fenced_through = ?, updated_at = ?
WHERE task_id = ?
"""
UPSERT_ATTEMPT = """
INSERT INTO task_attempts (task_id, attempt, node_id, state, started_at, finished_at, error_type,
                           error_message, error_traceback, ack_subject)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (task_id, attempt) DO UPDATE SET
    node_id = excluded.node_id, state = excluded.state,
    started_at = COALESCE(task_attempts.started_at, excluded.started_at),
    finished_at = excluded.finished_at, error_type = excluded.error_type,
    error_message = excluded.error_message, error_traceback = excluded.error_traceback,
    ack_subject = COALESCE(excluded.ack_subject, task_attempts.ack_subject)
"""
INSERT_EVENT = """
INSERT OR IGNORE INTO events (event_id, task_id, attempt, kind, from_state, to_state, node_id, at, data)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
SQLITE_MAX_PARAMS = 900


class TaskStore:
    """Reads and batched writes of task state."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def write_batch(self, batch: WriteBatch) -> None:
        """Commit everything in `batch` as one transaction."""
        statements: list[Statement] = [
            (INSERT_TASK, [t.insert_row() for t in batch.new_tasks]),
            (UPDATE_TASK, [t.update_row() for t in batch.changed_tasks.values()]),
            (UPSERT_ATTEMPT, [a.upsert_row() for a in batch.attempts.values()]),
            (INSERT_EVENT, [e.insert_row() for e in batch.events]),
        ]
        await self._db.write(statements)

    # --- reads used by the coordinator's own bookkeeping (write connection, strictly ordered) ----

    async def load_unfinished(self) -> list[TaskRecord]:
        """Every task not in a terminal state: the coordinator's working set after a restart.

        Running tasks come with the ack subject of their current attempt.
        """
        placeholders = ",".join("?" for _ in _UNFINISHED)
        rows = await self._db.fetch_all_writer(
            f"SELECT * FROM tasks WHERE state IN ({placeholders}) ORDER BY task_id", _UNFINISHED
        )
        records = [TaskRecord.from_row(r) for r in rows]
        acks = await self._db.fetch_all_writer(
            "SELECT a.task_id, a.ack_subject FROM task_attempts a JOIN tasks t "
            "ON t.task_id = a.task_id AND t.attempts = a.attempt WHERE t.state = 'running'"
        )
        subjects = {r[0]: r[1] for r in acks}
        for record in records:
            record.ack_subject = subjects.get(record.task_id)
        return records

    async def attempt_history(self, task_id: str) -> list[AttemptError]:
        """Every attempt of a task with its error, oldest first (what a dead letter carries)."""
        rows = await self._db.fetch_all_writer(
            "SELECT * FROM task_attempts WHERE task_id = ? ORDER BY attempt", (task_id,)
        )
        return [
            AttemptError(
                attempt=r["attempt"],
                node_id=r["node_id"],
                state=r["state"],
                error_type=r["error_type"],
                message=r["error_message"],
                traceback=r["error_traceback"],
                started_at=r["started_at"],
                finished_at=r["finished_at"],
            )
            for r in rows
        ]

    async def existing_ids(self, task_ids: Iterable[str]) -> dict[str, TaskState]:
        """task id -> state for the ids that exist (read in order with the writer)."""
        found: dict[str, TaskState] = {}
        for chunk in _chunks(list(task_ids)):
            placeholders = ",".join("?" for _ in chunk)
            rows = await self._db.fetch_all_writer(
                f"SELECT task_id, state FROM tasks WHERE task_id IN ({placeholders})", chunk
            )
            found.update({r[0]: TaskState(r[1]) for r in rows})
        return found

    async def load_record(self, task_id: str) -> TaskRecord | None:
        """One task's record, read in order with the coordinator's own writes."""
        rows = await self._db.fetch_all_writer("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return TaskRecord.from_row(rows[0]) if rows else None

    async def find_by_idempotency_keys(self, keys: Iterable[str]) -> dict[str, tuple[str, TaskState]]:
        """idempotency key -> (task id, state) for the keys that exist."""
        found: dict[str, tuple[str, TaskState]] = {}
        for chunk in _chunks(list(keys)):
            placeholders = ",".join("?" for _ in chunk)
            rows = await self._db.fetch_all_writer(
                f"SELECT idempotency_key, task_id, state FROM tasks WHERE idempotency_key IN ({placeholders})",
                chunk,
            )
            found.update({r[0]: (r[1], TaskState(r[2])) for r in rows})
        return found

    async def count_by_state(self) -> dict[TaskState, int]:
        """How many tasks are in each state."""
        rows = await self._db.fetch_all_writer("SELECT state, COUNT(*) FROM tasks GROUP BY state")
        return {TaskState(r[0]): r[1] for r in rows}

    # --- reads served to the API (read connection) ----------------------------------------------

    async def get_task(self, task_id: str, *, history: bool = True) -> TaskView | None:
        """The task's view, with attempts and events when `history`."""
        row = await self._db.fetch_one("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        if row is None:
            return None
        attempts: list[AttemptView] = []
        events: list[EventView] = []
        if history:
            attempts = await self._attempts(task_id)
            events = await self._events(task_id)
        return _task_view(row, attempts, events)

    async def list_tasks(self, *, state: TaskState | None, skill: str | None, limit: int) -> list[TaskSummary]:
        """Newest first, filtered by state and/or skill."""
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        if skill is not None:
            where.append("skill = ?")
            params.append(skill)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._db.fetch_all(
            "SELECT task_id, skill, priority, state, attempts, created_at, node_id, started_at, finished_at "
            f"FROM tasks {clause} ORDER BY task_id DESC LIMIT ?",
            (*params, limit),
        )
        return [
            TaskSummary(
                task_id=r["task_id"],
                skill=r["skill"],
                priority=Priority(r["priority"]),
                state=TaskState(r["state"]),
                attempts=r["attempts"],
                created_at=r["created_at"],
                node_id=r["node_id"],
                started_at=r["started_at"],
                finished_at=r["finished_at"],
            )
            for r in rows
        ]

    async def states(self, task_ids: list[str]) -> dict[str, TaskState]:
        """task id -> state for the ids that exist."""
        found: dict[str, TaskState] = {}
        for chunk in _chunks(task_ids):
            placeholders = ",".join("?" for _ in chunk)
            rows = await self._db.fetch_all(
                f"SELECT task_id, state FROM tasks WHERE task_id IN ({placeholders})", chunk
            )
            found.update({r[0]: TaskState(r[1]) for r in rows})
        return found

    async def _attempts(self, task_id: str) -> list[AttemptView]:
        rows = await self._db.fetch_all("SELECT * FROM task_attempts WHERE task_id = ? ORDER BY attempt", (task_id,))
        return [
            AttemptView(
                attempt=r["attempt"],
                node_id=r["node_id"],
                state=AttemptState(r["state"]),
                started_at=r["started_at"],
                finished_at=r["finished_at"],
                error_type=r["error_type"],
                error_message=r["error_message"],
            )
            for r in rows
        ]

    async def _events(self, task_id: str) -> list[EventView]:
        rows = await self._db.fetch_all("SELECT * FROM events WHERE task_id = ? ORDER BY id", (task_id,))
        return [
            EventView(
                id=r["id"],
                at=r["at"],
                kind=r["kind"],
                attempt=r["attempt"],
                from_state=None if r["from_state"] is None else TaskState(r["from_state"]),
                to_state=None if r["to_state"] is None else TaskState(r["to_state"]),
                node_id=r["node_id"],
                data=JSON_NULL if r["data"] is None else msgspec.Raw(r["data"].encode()),
            )
            for r in rows
        ]


_UNFINISHED = [
    s.value
    for s in (
        TaskState.PENDING,
        TaskState.WAITING_APPROVAL,
        TaskState.QUEUED,
        TaskState.RUNNING,
        TaskState.RETRYING,
    )
]


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), SQLITE_MAX_PARAMS):
        yield items[start : start + SQLITE_MAX_PARAMS]


def _task_view(row: sqlite3.Row, attempts: list[AttemptView], events: list[EventView]) -> TaskView:
    return TaskView(
        task_id=row["task_id"],
        skill=row["skill"],
        priority=Priority(row["priority"]),
        state=TaskState(row["state"]),
        input=msgspec.Raw(row["input"].encode()),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        timeout_s=row["timeout_s"],
        created_at=row["created_at"],
        idempotency_key=row["idempotency_key"],
        node_id=row["node_id"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        result=JSON_NULL if row["result"] is None else msgspec.Raw(row["result"].encode()),
        error_type=row["error_type"],
        error_message=row["error_message"],
        error_traceback=row["error_traceback"],
        trace_id=row["trace_id"],
        next_attempt_at=row["next_attempt_at"],
        attempt_log=attempts,
        events=events,
    )
