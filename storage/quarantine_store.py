"""The quarantine table: task events the coordinator could not decode or fold, kept for inspection.

Rows are written in the event batch's own transaction (`TaskStore.write_batch` calls `stage`), so an
event is acked only once its quarantine row is committed, and a redelivered one is recorded once
(`stream_seq` is unique). Anyone on the bus can publish events, so the table is bounded twice: each
row keeps only the first `KEEP_BYTES` of its message (the events stream keeps the whole message
until it expires), and only the newest `max_rows` rows are kept.
"""

from __future__ import annotations

import sqlite3

from common.models import QuarantinedEvent
from storage.database import Database
from storage.records import QuarantineRecord

KEEP_BYTES = 4096
# What a listing returns of each row's bytes: 500 rows of it stay well under NATS's 1 MiB.
LISTED_BYTES = 512
MAX_LISTED = 500

INSERT_QUARANTINE = """
INSERT OR IGNORE INTO quarantine (at, subject, stream_seq, task_id, kind, reason, size, data)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
TRIM_QUARANTINE = "DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?"


def stage(conn: sqlite3.Connection, records: list[QuarantineRecord], max_rows: int) -> None:
    """Insert `records` (inside the caller's transaction) and drop rows beyond the newest `max_rows`."""
    conn.executemany(INSERT_QUARANTINE, [r.insert_row() for r in records])
    conn.execute(TRIM_QUARANTINE, (max_rows,))


class QuarantineStore:
    """Reads of the quarantine table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def newest(self, *, task_id: str | None, limit: int) -> list[QuarantinedEvent]:
        """The newest rows first (of one task, when given), each with its first `LISTED_BYTES`."""
        limit = max(1, min(limit, MAX_LISTED))
        where, params = ("WHERE task_id = ?", (task_id,)) if task_id is not None else ("", ())
        rows = await self._db.fetch_all(
            f"SELECT id, at, subject, stream_seq, task_id, kind, reason, size, substr(data, 1, {LISTED_BYTES}) "
            f"AS head FROM quarantine {where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [
            QuarantinedEvent(
                id=r["id"], at=r["at"], subject=r["subject"], stream_seq=r["stream_seq"], task_id=r["task_id"],
                kind=r["kind"], reason=r["reason"], size=r["size"], data=bytes(r["head"]),
            )
            for r in rows
        ]  # fmt: skip
