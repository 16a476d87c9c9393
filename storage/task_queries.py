"""Reads of tasks, their attempts and their events.

Two kinds of reader: the coordinator's own bookkeeping reads on the write connection, strictly in
order with its writes (its working set after a restart, duplicate checks at submit, a dead letter's
attempt history); the API's reads on the read connection, which WAL never makes wait for the writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import msgspec

from common.event_kinds import RERUN_KINDS
from common.models import JSON_NULL, ArtifactView, AttemptError, AttemptView, EventView, TaskSummary, TaskView
from common.states import AttemptState, Priority, TaskState
from storage.artifact_index import ArtifactIndex
from storage.database import Database
from storage.records import TaskRecord
from storage.sql import chunks, placeholders

_UNFINISHED = [
    s.value
    for s in (TaskState.PENDING, TaskState.WAITING_APPROVAL, TaskState.QUEUED, TaskState.RUNNING, TaskState.RETRYING)
]
_RERUN_KINDS = [str(kind) for kind in RERUN_KINDS]
SERIES_OFFSETS_SQL = (
    f"SELECT attempt FROM events WHERE task_id = ? AND kind IN ({placeholders(len(_RERUN_KINDS))}) ORDER BY id"
)
TASK_SUMMARY_COLUMNS = "task_id, skill, priority, state, attempts, created_at, node_id, started_at, finished_at, tenant"


class TaskQueries:
    """Reads of task state, for the coordinator's bookkeeping and for the API."""

    def __init__(self, db: Database, artifacts: ArtifactIndex) -> None:
        self._db = db
        self._artifacts = artifacts

    # --- the coordinator's own bookkeeping (write connection, strictly ordered) -----------------

    async def load_unfinished(self) -> list[TaskRecord]:
        """Every task not in a terminal state: the coordinator's working set after a restart.

        Running tasks come with the ack subject of their current attempt.
        """
        rows = await self._db.fetch_all_writer(
            f"SELECT * FROM tasks WHERE state IN ({placeholders(len(_UNFINISHED))}) ORDER BY task_id", _UNFINISHED
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

    async def count_by_state(self) -> dict[TaskState, int]:
        """How many tasks are in each state."""
        rows = await self._db.fetch_all_writer("SELECT state, COUNT(*) FROM tasks GROUP BY state")
        return {TaskState(r[0]): r[1] for r in rows}

    async def load_record(self, task_id: str) -> TaskRecord | None:
        """One task's record, read in order with the coordinator's own writes."""
        rows = await self._db.fetch_all_writer("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return TaskRecord.from_row(rows[0]) if rows else None

    async def existing_ids(self, task_ids: Iterable[str]) -> dict[str, TaskState]:
        """task id -> state for the ids that exist (read in order with the writer)."""
        found: dict[str, TaskState] = {}
        for chunk in chunks(list(task_ids)):
            rows = await self._db.fetch_all_writer(
                f"SELECT task_id, state FROM tasks WHERE task_id IN ({placeholders(len(chunk))})", chunk
            )
            found.update({r[0]: TaskState(r[1]) for r in rows})
        return found

    async def find_by_idempotency_keys(self, keys: Iterable[str]) -> dict[str, tuple[str, TaskState, str]]:
        """idempotency key -> (task id, state, tenant) for the keys that exist."""
        found: dict[str, tuple[str, TaskState, str]] = {}
        for chunk in chunks(list(keys)):
            rows = await self._db.fetch_all_writer(
                "SELECT idempotency_key, task_id, state, tenant FROM tasks "
                f"WHERE idempotency_key IN ({placeholders(len(chunk))})",
                chunk,
            )
            found.update({r[0]: (r[1], TaskState(r[2]), r[3]) for r in rows})
        return found

    async def attempt_history(self, task_id: str) -> list[AttemptError]:
        """Every attempt of a task with its error and series, oldest first (what a dead letter carries)."""
        rows = await self._db.fetch_all_writer(
            "SELECT * FROM task_attempts WHERE task_id = ? ORDER BY attempt", (task_id,)
        )
        offsets = [r[0] for r in await self._db.fetch_all_writer(SERIES_OFFSETS_SQL, (task_id, *_RERUN_KINDS))]
        return [_attempt_error(r, offsets) for r in rows]

    async def approvals_of(self, task_ids: list[str]) -> dict[str, list[tuple[str, str, str | None, float]]]:
        """task id -> [(approver, decision, note, at)] in order."""
        found: dict[str, list[tuple[str, str, str | None, float]]] = {t: [] for t in task_ids}
        for chunk in chunks(task_ids):
            rows = await self._db.fetch_all_writer(
                "SELECT task_id, approver, decision, note, at FROM approvals "
                f"WHERE task_id IN ({placeholders(len(chunk))}) ORDER BY id",
                chunk,
            )
            for r in rows:
                found[r[0]].append((r[1], r[2], r[3], r[4]))
        return found

    # --- reads served to the API (read connection) ----------------------------------------------

    async def get_task(self, task_id: str, *, history: bool = True) -> TaskView | None:
        """The task's view, with attempts, events and artifacts when `history`."""
        row = await self._db.fetch_one("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        if row is None:
            return None
        offsets = [r[0] for r in await self._db.fetch_all(SERIES_OFFSETS_SQL, (task_id, *_RERUN_KINDS))]
        attempts: list[AttemptView] = []
        events: list[EventView] = []
        artifacts: list[ArtifactView] = []
        if history:
            attempts = await self._attempts(task_id, offsets)
            events = await self._events(task_id)
            artifacts = await self._artifacts.artifacts_of(task_id)
        return _task_view(row, attempts, events, artifacts, series=len(offsets) + 1)

    async def list_tasks(
        self,
        *,
        state: TaskState | None,
        skill: str | None,
        limit: int,
        before: str | None = None,
        tenant: str | None = None,
        since: str | None = None,
    ) -> list[TaskSummary]:
        """Newest first, filtered by state, skill and/or tenant; `before`: only ids below it (the next page);
        `since`: only ids from it on (a creation time, as a ULID floor)."""
        clause, params = _task_filter(state, skill, tenant, since=since, before=before)
        rows = await self._db.fetch_all(
            f"SELECT {TASK_SUMMARY_COLUMNS} FROM tasks {clause} ORDER BY task_id DESC LIMIT ?", (*params, limit)
        )
        return [_task_summary(r) for r in rows]

    async def count_tasks(
        self,
        *,
        state: TaskState | None,
        skill: str | None,
        tenant: str | None = None,
        since: str | None = None,
        before: str | None = None,
    ) -> int:
        """How many tasks the filter of `list_tasks` matches."""
        clause, params = _task_filter(state, skill, tenant, since=since, before=before)
        row = await self._db.fetch_one(f"SELECT COUNT(*) FROM tasks {clause}", params)
        return 0 if row is None else int(row[0])

    async def states(self, task_ids: list[str]) -> dict[str, TaskState]:
        """task id -> state for the ids that exist."""
        found: dict[str, TaskState] = {}
        for chunk in chunks(task_ids):
            rows = await self._db.fetch_all(
                f"SELECT task_id, state FROM tasks WHERE task_id IN ({placeholders(len(chunk))})", chunk
            )
            found.update({r[0]: TaskState(r[1]) for r in rows})
        return found

    async def recent_events(self, task_id: str, *, limit: int) -> list[EventView]:
        """The newest `limit` events of `task_id`, newest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM events WHERE task_id = ? ORDER BY id DESC LIMIT ?", (task_id, limit)
        )
        return [_event_view(r) for r in rows]

    async def _attempts(self, task_id: str, offsets: list[int]) -> list[AttemptView]:
        rows = await self._db.fetch_all("SELECT * FROM task_attempts WHERE task_id = ? ORDER BY attempt", (task_id,))
        return [_attempt_view(r, offsets) for r in rows]

    async def _events(self, task_id: str) -> list[EventView]:
        rows = await self._db.fetch_all("SELECT * FROM events WHERE task_id = ? ORDER BY id", (task_id,))
        return [_event_view(r) for r in rows]


def series_of(attempt: int, offsets: list[int]) -> int:
    """The series (1-based) attempt number `attempt` belongs to, given each later series' offset."""
    return 1 + sum(1 for offset in offsets if offset < attempt)


def _task_filter(
    state: TaskState | None,
    skill: str | None,
    tenant: str | None = None,
    *,
    since: str | None = None,
    before: str | None = None,
) -> tuple[str, list[object]]:
    where: list[str] = []
    params: list[object] = []
    if since is not None:
        where.append("task_id >= ?")
        params.append(since)
    if before is not None:
        where.append("task_id < ?")
        params.append(before)
    if state is not None:
        where.append("state = ?")
        params.append(state.value)
    if skill is not None:
        where.append("skill = ?")
        params.append(skill)
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    return (f"WHERE {' AND '.join(where)}" if where else ""), params


def _attempt_error(r: sqlite3.Row, offsets: list[int]) -> AttemptError:
    return AttemptError(
        attempt=r["attempt"],
        series=series_of(r["attempt"], offsets),
        node_id=r["node_id"],
        state=r["state"],
        error_type=r["error_type"],
        message=r["error_message"],
        traceback=r["error_traceback"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


def _attempt_view(r: sqlite3.Row, offsets: list[int]) -> AttemptView:
    return AttemptView(
        attempt=r["attempt"],
        node_id=r["node_id"],
        state=AttemptState(r["state"]),
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        error_type=r["error_type"],
        error_message=r["error_message"],
        series=series_of(r["attempt"], offsets),
    )


def _task_summary(r: sqlite3.Row) -> TaskSummary:
    return TaskSummary(
        task_id=r["task_id"],
        skill=r["skill"],
        priority=Priority(r["priority"]),
        state=TaskState(r["state"]),
        attempts=r["attempts"],
        created_at=r["created_at"],
        node_id=r["node_id"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        tenant=r["tenant"],
    )


def _event_view(r: sqlite3.Row) -> EventView:
    return EventView(
        id=r["id"],
        at=r["at"],
        kind=r["kind"],
        attempt=r["attempt"],
        from_state=None if r["from_state"] is None else TaskState(r["from_state"]),
        to_state=None if r["to_state"] is None else TaskState(r["to_state"]),
        node_id=r["node_id"],
        data=JSON_NULL if r["data"] is None else msgspec.Raw(r["data"].encode()),
        event_id=r["event_id"],
    )


def _task_view(
    row: sqlite3.Row,
    attempts: list[AttemptView],
    events: list[EventView],
    artifacts: list[ArtifactView],
    *,
    series: int,
) -> TaskView:
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
        artifacts=artifacts,
        attempt_offset=row["attempt_offset"],
        series=series,
        tenant=row["tenant"],
    )
