"""Queries on tasks, attempts and the event log."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable

import msgspec

from common.errors import StorageError
from common.models import (
    JSON_NULL,
    ArtifactView,
    AttemptError,
    AttemptView,
    EventView,
    TaskSummary,
    TaskView,
    WindowStats,
)
from common.states import AttemptState, Priority, TaskState
from storage import quarantine_store
from storage.audit import GENESIS, ChainBreak, ChainVerifier, canonical, chain_hash, rehash_rows
from storage.database import Database
from storage.records import EventRecord, TaskRecord, WriteBatch

INSERT_TASK = """
INSERT INTO tasks (task_id, skill, priority, state, input, idempotency_key, attempts, max_attempts,
                   timeout_s, attempt_offset, submitter, created_at, updated_at, trace_id, backoff, risk,
                   guard_rule, approvals_needed, held_until, traceparent)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
UPDATE_TASK = """
UPDATE tasks SET state = ?, attempts = ?, attempt_offset = ?, node_id = ?, queued_at = ?, started_at = ?,
                 finished_at = ?, result = ?, error_type = ?, error_message = ?, error_traceback = ?,
                 stream_seq = ?, next_attempt_at = ?, fenced_through = ?, held_until = ?, updated_at = ?
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
INSERT INTO events (event_id, task_id, attempt, kind, from_state, to_state, node_id, at, data, prev_hash, hash)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
NO_UPDATE_TRIGGER = """
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END
"""
VERIFY_CHUNK = 5000
INSERT_APPROVAL = "INSERT INTO approvals (task_id, approver, decision, note, at) VALUES (?, ?, ?, ?, ?)"
INSERT_ARTIFACT = """
INSERT INTO artifacts (task_id, attempt, name, size, sha256, content_type, backend, key, created_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
SQLITE_MAX_PARAMS = 900
# The event kinds that start a new series of attempts (`claw task retry`, DLQ replay); such an
# event's `attempt` is the number of attempts before the series (its attempt offset).
RERUN_EVENT_KINDS = ("retry", "replayed")


class TaskStore:
    """Reads and batched writes of task state."""

    def __init__(self, db: Database, *, audit_key: bytes | None = None, quarantine_max_rows: int = 10_000) -> None:
        self._db = db
        self._audit_key = audit_key
        self._quarantine_max_rows = quarantine_max_rows
        # The chain is extended in commit order: one batch at a time computes and writes its hashes.
        self._chain_lock = asyncio.Lock()
        self._head: str | None = None

    async def write_batch(self, batch: WriteBatch) -> None:
        """Commit everything in `batch` as one transaction, extending the event log's hash chain.

        The whole transaction - dropping events already recorded, hashing the new ones onto the
        chain, every insert and update, the commit - is one call into the writer thread.
        """
        async with self._chain_lock:
            if self._head is None:
                await self._open_chain()
            new_tasks = [t.insert_row() for t in batch.new_tasks]
            changed = [t.update_row() for t in batch.changed_tasks.values()]
            attempts = [a.upsert_row() for a in batch.attempts.values()]
            audit_key = self._audit_key

            def write(conn: sqlite3.Connection) -> str:
                # The head as the previous commit left it: read here, on the writer thread, and
                # set in `committed`, so a cancelled caller can never fork the chain.
                chain = self._head or GENESIS
                event_rows = []
                for event in _unrecorded(conn, batch.events):
                    row = event.insert_row()
                    digest = chain_hash(chain, canonical(*row), audit_key)  # type: ignore[arg-type]
                    event_rows.append((*row, chain, digest))
                    chain = digest
                for sql, rows in (
                    (INSERT_TASK, new_tasks),
                    (UPDATE_TASK, changed),
                    (UPSERT_ATTEMPT, attempts),
                    (INSERT_EVENT, event_rows),
                    (INSERT_APPROVAL, batch.approvals),
                    (INSERT_ARTIFACT, batch.artifacts),
                ):
                    if rows:
                        conn.executemany(sql, rows)
                if batch.quarantined:
                    quarantine_store.stage(conn, batch.quarantined, self._quarantine_max_rows)
                return chain

            def committed(chain: str) -> None:
                self._head = chain

            await self._db.transaction(write, on_commit=committed)

    async def _open_chain(self) -> None:
        """Load the chain's head; hash events written before the chain existed (one-off backfill)."""
        # Rows get hashes in order (the backfill hashes all old rows at once, new rows always get
        # one), so the oldest row tells: no scan of a big log at every start.
        oldest = await self._db.fetch_all_writer("SELECT hash FROM events ORDER BY id LIMIT 1")
        if oldest and oldest[0][0] is None:
            rows = await self._db.fetch_all_writer("SELECT * FROM events ORDER BY id")
            updates = [
                ("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?", values)
                for values in rehash_rows(rows, self._audit_key)
            ]
            await self._db.run_script([("DROP TRIGGER events_no_update", ()), *updates, (NO_UPDATE_TRIGGER, ())])
        last = await self._db.fetch_all_writer("SELECT hash FROM events ORDER BY id DESC LIMIT 1")
        self._head = last[0][0] if last else GENESIS

    async def chain_head(self) -> tuple[int, str] | None:
        """The id and hash of the newest event (what the coordinator anchors in NATS)."""
        rows = await self._db.fetch_all("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1")
        return (rows[0][0], rows[0][1]) if rows else None

    async def event_hash(self, event_id: int) -> str | None:
        """The stored hash of one event, or None if there is no such event."""
        row = await self._db.fetch_one("SELECT hash FROM events WHERE id = ?", (event_id,))
        return None if row is None else str(row[0])

    async def verify_chain(self) -> tuple[int, ChainBreak | None]:
        """Walk the whole event log in chunks; returns (events checked, the first break or None)."""
        verifier = ChainVerifier(self._audit_key)
        last_id = 0
        while True:
            chunk = await self._db.fetch_all(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (last_id, VERIFY_CHUNK)
            )
            if not chunk or verifier.feed(chunk) is not None:
                break
            last_id = chunk[-1]["id"]
        return verifier.checked, verifier.broken

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
        """Every attempt of a task with its error and series, oldest first (what a dead letter carries)."""
        rows = await self._db.fetch_all_writer(
            "SELECT * FROM task_attempts WHERE task_id = ? ORDER BY attempt", (task_id,)
        )
        offsets = await self._series_offsets(task_id, writer=True)
        return [
            AttemptError(
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
        offsets = await self._series_offsets(task_id)
        attempts: list[AttemptView] = []
        events: list[EventView] = []
        artifacts: list[ArtifactView] = []
        if history:
            attempts = await self._attempts(task_id, offsets)
            events = await self._events(task_id)
            artifacts = await self.artifacts_of(task_id)
        return _task_view(row, attempts, events, artifacts, series=len(offsets) + 1)

    async def list_tasks(
        self, *, state: TaskState | None, skill: str | None, limit: int, before: str | None = None
    ) -> list[TaskSummary]:
        """Newest first, filtered by state and/or skill; `before`: only ids below it (the next page)."""
        clause, params = _task_filter(state, skill)
        if before is not None:
            clause += (" AND " if clause else "WHERE ") + "task_id < ?"
            params.append(before)
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

    async def count_tasks(self, *, state: TaskState | None, skill: str | None) -> int:
        """How many tasks the filter of `list_tasks` matches."""
        clause, params = _task_filter(state, skill)
        row = await self._db.fetch_one(f"SELECT COUNT(*) FROM tasks {clause}", params)
        return 0 if row is None else int(row[0])

    async def approvals_of(self, task_ids: list[str]) -> dict[str, list[tuple[str, str, str | None, float]]]:
        """task id -> [(approver, decision, note, at)] in order."""
        found: dict[str, list[tuple[str, str, str | None, float]]] = {t: [] for t in task_ids}
        for chunk in _chunks(task_ids):
            placeholders = ",".join("?" for _ in chunk)
            rows = await self._db.fetch_all_writer(
                f"SELECT task_id, approver, decision, note, at FROM approvals WHERE task_id IN ({placeholders}) "
                "ORDER BY id",
                chunk,
            )
            for r in rows:
                found[r[0]].append((r[1], r[2], r[3], r[4]))
        return found

    async def artifacts_of(self, task_id: str) -> list[ArtifactView]:
        """A task's artifacts, oldest first."""
        rows = await self._db.fetch_all("SELECT * FROM artifacts WHERE task_id = ? ORDER BY id", (task_id,))
        return [_artifact_view(r) for r in rows]

    async def artifacts_page(
        self, task_id: str, *, after: int, limit: int
    ) -> tuple[list[tuple[int, ArtifactView]], int]:
        """Up to `limit` of a task's artifacts with row id above `after`, oldest first, as (row id,
        view); and how many the task has in all."""
        rows = await self._db.fetch_all(
            "SELECT * FROM artifacts WHERE task_id = ? AND id > ? ORDER BY id LIMIT ?", (task_id, after, limit)
        )
        total = await self._db.fetch_one("SELECT COUNT(*) FROM artifacts WHERE task_id = ?", (task_id,))
        return [(r["id"], _artifact_view(r)) for r in rows], 0 if total is None else int(total[0])

    async def drop_expired_artifacts(self, now: float) -> list[tuple[str, str]]:
        """Delete the rows of expired artifacts; returns the (sha256, key) of objects no row references now."""
        rows = await self._db.fetch_all_writer(
            "SELECT id, sha256, key FROM artifacts WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
        )
        if not rows:
            return []
        await self._db.write([("DELETE FROM artifacts WHERE id = ?", [(r["id"],) for r in rows])])
        candidates = {r["sha256"]: r["key"] for r in rows}
        still = await self._db.fetch_all_writer(
            f"SELECT DISTINCT sha256 FROM artifacts WHERE sha256 IN ({','.join('?' for _ in candidates)})",
            list(candidates),
        )
        referenced = {r[0] for r in still}
        return [(sha, key) for sha, key in candidates.items() if sha not in referenced]

    async def referenced_among(self, sha256s: list[str]) -> set[str]:
        """Which of these contents some artifact row references."""
        found: set[str] = set()
        for chunk in _chunks(sha256s):
            rows = await self._db.fetch_all_writer(
                f"SELECT DISTINCT sha256 FROM artifacts WHERE sha256 IN ({','.join('?' for _ in chunk)})", chunk
            )
            found.update(r[0] for r in rows)
        return found

    async def is_referenced(self, sha256: str) -> bool:
        """Whether any artifact row references these bytes."""
        rows = await self._db.fetch_all_writer("SELECT 1 FROM artifacts WHERE sha256 = ? LIMIT 1", (sha256,))
        return bool(rows)

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

    async def window_stats(self, *, since: float, window_s: float) -> WindowStats:
        """The tasks that finished at or after `since`: counts by final state, rates, run times.

        Every query is a range scan of the index `tasks_finished` (finished_at, state, started_at), so
        the cost follows the tasks in the window, not the table. The p95 is the nearest rank, read as
        one row at its offset after SQLite sorts the window's run times: exact, and no rows are
        loaded into Python.
        """
        try:
            rows = await self._db.fetch_all(WINDOW_COUNTS_SQL, (since, *_FINISHED))
            counted = await self._db.fetch_one(WINDOW_RUN_TIMES_SQL, (since,))
            timed, run_mean_s = (counted[0], counted[1]) if counted is not None else (0, None)
            run_p95_s = None
            if timed:
                row = await self._db.fetch_one(WINDOW_RANK_SQL, (since, nearest_rank(timed, P95_PERCENT) - 1))
                run_p95_s = None if row is None else row[0]
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the window statistics: {exc}") from exc
        counts = {r[0]: r[1] for r in rows}
        by_state = {state: counts[state] for state in _FINISHED if counts.get(state)}
        finished = sum(by_state.values())
        failures = by_state.get(TaskState.FAILED, 0) + by_state.get(TaskState.DEAD, 0)
        return WindowStats(
            window_s=window_s,
            finished=finished,
            by_state=by_state,
            completion_rate=by_state.get(TaskState.SUCCEEDED, 0) / finished if finished else None,
            failure_rate=failures / finished if finished else None,
            run_mean_s=run_mean_s,
            run_p95_s=run_p95_s,
        )

    async def recent_events(self, task_id: str, *, limit: int) -> list[EventView]:
        """The newest `limit` events of `task_id`, newest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM events WHERE task_id = ? ORDER BY id DESC LIMIT ?", (task_id, limit)
        )
        return [_event_view(r) for r in rows]

    async def _attempts(self, task_id: str, offsets: list[int]) -> list[AttemptView]:
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
                series=series_of(r["attempt"], offsets),
            )
            for r in rows
        ]

    async def _series_offsets(self, task_id: str, *, writer: bool = False) -> list[int]:
        """The attempt offset of each series after the first, oldest first."""
        sql = (
            f"SELECT attempt FROM events WHERE task_id = ? AND kind IN ({','.join('?' for _ in RERUN_EVENT_KINDS)}) "
            "ORDER BY id"
        )
        fetch = self._db.fetch_all_writer if writer else self._db.fetch_all
        return [r[0] for r in await fetch(sql, (task_id, *RERUN_EVENT_KINDS))]

    async def _events(self, task_id: str) -> list[EventView]:
        rows = await self._db.fetch_all("SELECT * FROM events WHERE task_id = ? ORDER BY id", (task_id,))
        return [_event_view(r) for r in rows]


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


# The final states, in the order `claw status` lists them; a window counts tasks in these.
_FINISHED = [
    s.value for s in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED, TaskState.REJECTED)
]
P95_PERCENT = 95
# `+state` keeps SQLite from choosing the (state, task_id) index - for the filter or to group without a
# sort - which would visit every finished task ever; the range on the covering index (finished_at,
# state, started_at) visits only the window's (tests/unit/test_window_stats.py checks the plans).
WINDOW_COUNTS_SQL = (
    "SELECT state, COUNT(*) FROM tasks WHERE finished_at >= ? "
    f"AND +state IN ({','.join('?' for _ in _FINISHED)}) GROUP BY +state"
)
_WINDOW_SUCCESSES = "FROM tasks WHERE finished_at >= ? AND +state = 'succeeded' AND started_at IS NOT NULL"
WINDOW_RUN_TIMES_SQL = f"SELECT COUNT(*), AVG(finished_at - started_at) {_WINDOW_SUCCESSES}"
# The run time at a rank (0-based offset): SQLite sorts the window's run times, one row comes back.
WINDOW_RANK_SQL = f"SELECT finished_at - started_at AS ran_s {_WINDOW_SUCCESSES} ORDER BY ran_s LIMIT 1 OFFSET ?"


def series_of(attempt: int, offsets: list[int]) -> int:
    """The series (1-based) attempt number `attempt` belongs to, given each later series' offset."""
    return 1 + sum(1 for offset in offsets if offset < attempt)


def _task_filter(state: TaskState | None, skill: str | None) -> tuple[str, list[object]]:
    where: list[str] = []
    params: list[object] = []
    if state is not None:
        where.append("state = ?")
        params.append(state.value)
    if skill is not None:
        where.append("skill = ?")
        params.append(skill)
    return (f"WHERE {' AND '.join(where)}" if where else ""), params


def nearest_rank(count: int, percent: int) -> int:
    """The 1-based rank of the `percent` percentile among `count` sorted values: ceil(count * p / 100),
    in integers so that no rounding moves it."""
    return max(1, -(-count * percent // 100))


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


def _unrecorded(conn: sqlite3.Connection, events: list[EventRecord]) -> list[EventRecord]:
    """Drop events already in the log (a redelivery) or twice in the batch, keeping order."""
    ids = [e.event_id for e in events if e.event_id is not None]
    if not ids:
        return events
    seen: set[str] = set()
    for chunk in _chunks(ids):
        placeholders = ",".join("?" for _ in chunk)
        rows = conn.execute(f"SELECT event_id FROM events WHERE event_id IN ({placeholders})", chunk).fetchall()
        seen.update(r[0] for r in rows)
    fresh = []
    for event in events:
        if event.event_id is not None:
            if event.event_id in seen:
                continue
            seen.add(event.event_id)
        fresh.append(event)
    return fresh


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), SQLITE_MAX_PARAMS):
        yield items[start : start + SQLITE_MAX_PARAMS]


def _artifact_view(r: sqlite3.Row) -> ArtifactView:
    return ArtifactView(
        task_id=r["task_id"],
        attempt=r["attempt"],
        name=r["name"],
        size=r["size"],
        sha256=r["sha256"],
        content_type=r["content_type"],
        backend=r["backend"],
        key=r["key"],
        created_at=r["created_at"],
        expires_at=r["expires_at"],
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
    )
