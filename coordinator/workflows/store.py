"""The workflow tables (migration 11): SQL for the rows the runner writes and the reads it makes.

Writes are never made here directly: the runner stages them as statements of a `WriteBatch`, beside
their event-log rows, and the task writer commits both in one transaction (storage/task_writer.py).
Reads go through the database's read connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from storage.database import Database
from storage.sql import chunks, placeholders

INSERT_WORKFLOW = """
INSERT INTO workflows (name, version, spec, digest, registered_at, registered_by) VALUES (?, ?, ?, ?, ?, ?)
"""
INSERT_RUN = """
INSERT INTO workflow_runs (run_id, name, version, state, input, trigger, submitter, created_at, updated_at,
                           finished_at, error, rerun_of, from_node, trace_id, traceparent, salt, tenant)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
UPDATE_RUN = "UPDATE workflow_runs SET state = ?, updated_at = ?, finished_at = ?, error = ? WHERE run_id = ?"
UPSERT_NODE = """
INSERT INTO workflow_nodes (run_id, node, state, task_ids, items, source, started_at, finished_at, error)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, node) DO UPDATE SET
    state = excluded.state, task_ids = excluded.task_ids, items = excluded.items, source = excluded.source,
    started_at = excluded.started_at, finished_at = excluded.finished_at, error = excluded.error
"""
PUT_CACHE = "INSERT OR REPLACE INTO workflow_cache (cache_key, task_id, at) VALUES (?, ?, ?)"


@dataclass(frozen=True, slots=True)
class TaskFacts:
    """What the runner and `workflow show` read of a node's task."""

    task_id: str
    state: str
    attempts: int
    started_at: float | None
    finished_at: float | None
    result: str | None
    error: str | None


class WorkflowStore:
    """Reads of the workflow tables and of the tasks nodes ran."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def latest_spec(self, name: str, version: int | None) -> sqlite3.Row | None:
        """The row of `name` at `version` (None: its latest version)."""
        if version is None:
            return await self._db.fetch_one(
                "SELECT * FROM workflows WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
            )
        return await self._db.fetch_one("SELECT * FROM workflows WHERE name = ? AND version = ?", (name, version))

    async def latest_specs(self, name: str | None) -> list[sqlite3.Row]:
        """The latest version of every workflow (or of `name`), by name."""
        where, params = ("WHERE w.name = ?", (name,)) if name else ("", ())
        return await self._db.fetch_all(
            f"""SELECT w.* FROM workflows w JOIN (SELECT name, MAX(version) AS v FROM workflows GROUP BY name) m
                ON w.name = m.name AND w.version = m.v {where} ORDER BY w.name""",  # noqa: S608 (placeholders only)
            params,
        )

    async def run(self, run_id: str) -> sqlite3.Row | None:
        """One run's row."""
        return await self._db.fetch_one("SELECT * FROM workflow_runs WHERE run_id = ?", (run_id,))

    async def runs(self, *, name: str | None, state: str | None, limit: int) -> list[sqlite3.Row]:
        """The newest runs, filtered."""
        clauses, params = [], []
        if name:
            clauses.append("name = ?")
            params.append(name)
        if state:
            clauses.append("state = ?")
            params.append(state)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return await self._db.fetch_all(
            f"SELECT * FROM workflow_runs {where} ORDER BY created_at DESC, run_id DESC LIMIT ?",  # noqa: S608
            (*params, limit),
        )

    async def unfinished_runs(self) -> list[sqlite3.Row]:
        """Every run still running (the start-up load)."""
        return await self._db.fetch_all("SELECT * FROM workflow_runs WHERE state = 'running' ORDER BY run_id")

    async def nodes(self, run_id: str) -> list[sqlite3.Row]:
        """A run's node rows."""
        return await self._db.fetch_all("SELECT * FROM workflow_nodes WHERE run_id = ?", (run_id,))

    async def cached(self, cache_key: str) -> str | None:
        """The task that succeeded for a memo key, if it is still there and succeeded."""
        row = await self._db.fetch_one(
            """SELECT c.task_id FROM workflow_cache c JOIN tasks t ON t.task_id = c.task_id
               WHERE c.cache_key = ? AND t.state = 'succeeded'""",
            (cache_key,),
        )
        return None if row is None else str(row[0])

    async def tasks(self, task_ids: Iterable[str], *, current: bool = False) -> dict[str, TaskFacts]:
        """What is known of each task that exists, by id.

        `current`: read on the write connection, in order with the writes. The read connection is
        shared by every reader; a statement of another one still open on it keeps its snapshot, so
        it may answer with a state a moment old - right for display, wrong for deciding whether a
        node's task has ended (a task seen `queued` just after its `succeeded` was committed).
        """
        ids = list(dict.fromkeys(task_ids))
        found: dict[str, TaskFacts] = {}
        fetch = self._db.fetch_all_writer if current else self._db.fetch_all
        for chunk in chunks(ids):
            rows = await fetch(
                f"""SELECT task_id, state, attempts, started_at, finished_at, result, error_message FROM tasks
                    WHERE task_id IN ({placeholders(len(chunk))})""",  # noqa: S608 (placeholders only)
                chunk,
            )
            for r in rows:
                found[r[0]] = TaskFacts(r[0], r[1], r[2], r[3], r[4], r[5], r[6])
        return found
