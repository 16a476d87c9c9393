"""The schedules and their fires in the state database (tables `schedules`, `schedule_fires`).

Written by the coordinator's schedule engine only (coordinator/schedules/engine.py). A fire is
recorded after the task or run it started was accepted: if the coordinator dies in between, the
same fire is computed again and its id, the task's idempotency key, makes the second submit a
duplicate. `INSERT OR IGNORE` on the fire id keeps the record single too.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from storage.database import Database

_COLUMNS = (
    "name, definition, kind, paused, anchor_at, next_fire_at, last_fire_at, last_fire_id, artifact_cursor, fires, "
    "created_at, created_by, updated_at"
)


@dataclass(slots=True)
class ScheduleRow:
    """One row of `schedules`; `definition` is the create request's JSON."""

    name: str
    definition: bytes
    kind: str
    paused: bool
    anchor_at: float
    next_fire_at: float | None
    last_fire_at: float | None
    last_fire_id: str | None
    artifact_cursor: int
    fires: int
    created_at: float
    created_by: str | None
    updated_at: float

    @classmethod
    def of(cls, row: sqlite3.Row) -> ScheduleRow:
        """From a row selected with `_COLUMNS`."""
        return cls(
            row[0], bytes(row[1]), row[2], bool(row[3]), row[4], row[5], row[6], row[7], row[8], row[9],
            row[10], row[11], row[12],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class FireRow:
    """One row of `schedule_fires`."""

    fire_id: str
    schedule: str
    fire_time: float | None
    fired_at: float
    reason: str
    target_id: str | None
    error: str | None = None
    # Who caused it: a trigger message's publisher, the identity that fired by hand (None: time).
    fired_by: str | None = None


class ScheduleStore:
    """Reads and writes of the schedule tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def all(self) -> list[ScheduleRow]:
        """Every schedule, by name (read on the writer's connection: in order with its writes)."""
        rows = await self._db.fetch_all_writer(f"SELECT {_COLUMNS} FROM schedules ORDER BY name")
        return [ScheduleRow.of(r) for r in rows]

    async def get(self, name: str) -> ScheduleRow | None:
        """One schedule, or None."""
        rows = await self._db.fetch_all_writer(f"SELECT {_COLUMNS} FROM schedules WHERE name = ?", (name,))
        return ScheduleRow.of(rows[0]) if rows else None

    async def insert(self, row: ScheduleRow) -> bool:
        """Add a schedule; False when one of that name exists."""

        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"INSERT OR IGNORE INTO schedules ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (row.name, row.definition, row.kind, int(row.paused), row.anchor_at, row.next_fire_at,
                 row.last_fire_at, row.last_fire_id, row.artifact_cursor, row.fires, row.created_at,
                 row.created_by, row.updated_at),
            )  # fmt: skip
            return cursor.rowcount == 1

        return await self._db.transaction(run)

    async def delete(self, name: str) -> None:
        """Remove a schedule (its fires stay, as history: a schedule made again with the name must
        not fire a time that already fired)."""
        await self._db.write([("DELETE FROM schedules WHERE name = ?", [(name,)])])

    async def set_paused(self, name: str, paused: bool, next_fire_at: float | None, at: float) -> None:
        """Pause (no next fire) or resume (the next fire counted from now)."""
        await self._db.write(
            [("UPDATE schedules SET paused = ?, next_fire_at = ?, updated_at = ? WHERE name = ?",
              [(int(paused), next_fire_at, at, name)])]
        )  # fmt: skip

    async def set_next(self, name: str, next_fire_at: float | None, at: float) -> None:
        """Move a schedule's next fire time (fires the policy skipped)."""
        await self._db.write(
            [("UPDATE schedules SET next_fire_at = ?, updated_at = ? WHERE name = ?", [(next_fire_at, at, name)])]
        )

    async def set_cursor(self, name: str, artifact_cursor: int, at: float) -> None:
        """Remember the last artifact row an artifact trigger looked at."""
        await self._db.write(
            [("UPDATE schedules SET artifact_cursor = MAX(artifact_cursor, ?), updated_at = ? WHERE name = ?",
              [(artifact_cursor, at, name)])]
        )  # fmt: skip

    async def record_fires(self, name: str, fires: list[FireRow], *, next_fire_at: float | None, at: float) -> int:
        """Record fires (those already recorded are left alone) and the schedule's next fire time, in
        one transaction; returns how many were new."""

        def run(conn: sqlite3.Connection) -> int:
            new = 0
            for fire in fires:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO schedule_fires "
                    "(fire_id, schedule, fire_time, fired_at, reason, target_id, error, fired_by) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (fire.fire_id, fire.schedule, fire.fire_time, fire.fired_at, fire.reason, fire.target_id,
                     fire.error, fire.fired_by),
                )  # fmt: skip
                new += cursor.rowcount
            last = fires[-1] if fires else None
            conn.execute(
                "UPDATE schedules SET next_fire_at = ?, fires = fires + ?, updated_at = ?, "
                "last_fire_at = COALESCE(?, last_fire_at), last_fire_id = COALESCE(?, last_fire_id) WHERE name = ?",
                (next_fire_at, new, at, None if last is None else last.fired_at,
                 None if last is None else last.fire_id, name),
            )  # fmt: skip
            return new

        return await self._db.transaction(run)

    async def fire(self, fire_id: str) -> FireRow | None:
        """One recorded fire, or None."""
        rows = await self._db.fetch_all_writer(
            "SELECT fire_id, schedule, fire_time, fired_at, reason, target_id, error, fired_by FROM schedule_fires "
            "WHERE fire_id = ?",
            (fire_id,),
        )
        return FireRow(*rows[0]) if rows else None

    async def fires(self, name: str, *, limit: int = 20) -> list[FireRow]:
        """The newest fires of a schedule, newest first."""
        rows = await self._db.fetch_all(
            "SELECT fire_id, schedule, fire_time, fired_at, reason, target_id, error, fired_by FROM schedule_fires "
            "WHERE schedule = ? ORDER BY fired_at DESC, fire_id DESC LIMIT ?",
            (name, limit),
        )
        return [FireRow(*r) for r in rows]

    async def new_artifacts(
        self, after_id: int, *, not_from: str, limit: int = 500
    ) -> list[tuple[int, str, str, str, int]]:
        """Artifact rows after `after_id`: (id, task id, name, sha256, size), oldest first; without
        those of tasks whose idempotency key starts with `not_from` (a schedule's own fires: an
        artifact trigger whose target writes under its own prefix must not fire itself forever)."""
        rows = await self._db.fetch_all_writer(
            "SELECT a.id, a.task_id, a.name, a.sha256, a.size, t.idempotency_key FROM artifacts a "
            "LEFT JOIN tasks t ON t.task_id = a.task_id WHERE a.id > ? ORDER BY a.id LIMIT ?",
            (after_id, limit),
        )
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows if not (r[5] or "").startswith(not_from)]

    async def max_artifact_id(self, after_id: int, *, limit: int = 500) -> int:
        """The id of the last of the next `limit` artifact rows after `after_id` (to move a cursor)."""
        rows = await self._db.fetch_all_writer(
            "SELECT MAX(id) FROM (SELECT id FROM artifacts WHERE id > ? ORDER BY id LIMIT ?)", (after_id, limit)
        )
        return int(rows[0][0] or after_id)

    async def last_artifact_id(self) -> int:
        """The newest artifact row's id (0 when there is none): a new artifact trigger starts after it."""
        rows = await self._db.fetch_all_writer("SELECT COALESCE(MAX(id), 0) FROM artifacts")
        return int(rows[0][0])

    async def task_submitter(self, task_id: str) -> str | None:
        """Who submitted a task (a fire's duplicate must be the schedule's own)."""
        rows = await self._db.fetch_all_writer("SELECT submitter FROM tasks WHERE task_id = ?", (task_id,))
        return rows[0][0] if rows else None

    async def recover_fires(self, name: str, at: float) -> list[FireRow]:
        """Record the fires whose task was submitted but whose record was lost (the coordinator died
        in between and the missed-fire policy did not fire them again): found by their idempotency
        keys, a range of the tasks' unique index. Returns the fires recorded now."""
        low, high = f"schedule:{name}:", f"schedule:{name};"  # ';' follows ':' in ASCII

        def run(conn: sqlite3.Connection) -> list[FireRow]:
            rows = conn.execute(
                "SELECT t.idempotency_key, t.task_id, t.created_at FROM tasks t WHERE t.idempotency_key >= ? "
                "AND t.idempotency_key < ? AND t.submitter = ? AND NOT EXISTS "
                "(SELECT 1 FROM schedule_fires f WHERE f.fire_id = t.idempotency_key)",
                (low, high, f"schedule:{name}"),
            ).fetchall()
            fires = [FireRow(key, name, None, created, "recovered", task_id) for key, task_id, created in rows]
            conn.executemany(
                "INSERT OR IGNORE INTO schedule_fires (fire_id, schedule, fire_time, fired_at, reason, target_id, "
                "error) VALUES (?,?,?,?,?,?,?)",
                [(f.fire_id, f.schedule, f.fire_time, f.fired_at, f.reason, f.target_id, f.error) for f in fires],
            )
            conn.execute(
                "UPDATE schedules SET fires = fires + ?, updated_at = ? WHERE name = ?", (len(fires), at, name)
            )
            return fires

        return await self._db.transaction(run)
