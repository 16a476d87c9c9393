"""The one writer of task state: batched transactions, and the event log's hash chain.

Everything a coordinator step changes - new and changed tasks, attempts, event-log rows, approval
decisions, artifact rows, quarantined events - is one `WriteBatch`, committed as one transaction.
The event log is append-only (a trigger refuses updates) and hash-chained (storage/audit.py): each
row's hash covers its predecessor's, in commit order. After each commit the writer hands what was
committed (`storage/commits.py`) to its `on_commit` callback, the coordinator's after-commit
listeners.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

from storage import quarantine_store
from storage.audit import GENESIS, ChainVerifier, canonical, chain_hash, rehash_rows
from storage.commits import Committed, TaskImage
from storage.database import Database, StorageFault
from storage.records import EventRecord, WriteBatch
from storage.sql import chunks, placeholders

INSERT_TASK = """
INSERT INTO tasks (task_id, skill, priority, state, input, idempotency_key, attempts, max_attempts,
                   timeout_s, attempt_offset, submitter, created_at, updated_at, trace_id, backoff, risk,
                   guard_rule, approvals_needed, held_until, traceparent, tenant, flow)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
INSERT_APPROVAL = "INSERT INTO approvals (task_id, approver, decision, note, at) VALUES (?, ?, ?, ?, ?)"
INSERT_ARTIFACT = """
INSERT INTO artifacts (task_id, attempt, name, size, sha256, content_type, backend, key, created_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
VERIFY_CHUNK = 5000

CommitCallback = Callable[[Committed], None]


class TaskWriter:
    """Batched writes of task state, extending the event log's hash chain."""

    def __init__(self, db: Database, *, audit_key: bytes | None = None, quarantine_max_rows: int = 10_000) -> None:
        self._db = db
        self._audit_key = audit_key
        self._quarantine_max_rows = quarantine_max_rows
        # The chain is extended in commit order: one batch at a time computes and writes its hashes.
        self._chain_lock = asyncio.Lock()
        self._head: str | None = None
        # Told of every commit, on the event loop; set by the coordinator (its after-commit listeners).
        self.on_commit: CommitCallback | None = None

    @property
    def fault(self) -> StorageFault | None:
        """Why the state database refused the last write, until one succeeds again."""
        return self._db.fault

    async def write_batch(self, batch: WriteBatch) -> None:
        """Commit everything in `batch` as one transaction, extending the event log's hash chain.

        The whole transaction - dropping events already recorded, hashing the new ones onto the
        chain, every insert and update, the commit - is one call into the writer thread. `on_commit`
        is then called on the event loop, even if the caller was cancelled meanwhile, and before
        the caller resumes.
        """
        async with self._chain_lock:
            if self._head is None:
                await self._open_chain()
            new_tasks = [t.insert_row() for t in batch.new_tasks]
            changed = [t.update_row() for t in batch.changed_tasks.values()]
            attempts = [a.upsert_row() for a in batch.attempts.values()]
            statements = list(batch.statements)
            notify = self._notifier(batch)

            def write(conn: sqlite3.Connection) -> tuple[str, list[EventRecord]]:
                # The head as the previous commit left it: read here, on the writer thread, and
                # set in `committed`, so a cancelled caller can never fork the chain.
                events = _unrecorded(conn, batch.events)
                chain, event_rows = self._chained(events)
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
                for sql, rows in statements:
                    conn.executemany(sql, rows)
                return chain, events

            def committed(result: tuple[str, list[EventRecord]]) -> None:
                self._head = result[0]
                if notify is not None:
                    notify(result[1])

            await self._db.transaction(write, on_commit=committed)

    def _chained(self, events: list[EventRecord]) -> tuple[str, list[tuple[object, ...]]]:
        """The rows of `events` with their hashes, and the chain's new head (on the writer thread)."""
        chain = self._head or GENESIS
        rows = []
        for event in events:
            row = event.insert_row()
            digest = chain_hash(chain, canonical(*row), self._audit_key)  # type: ignore[arg-type]
            rows.append((*row, chain, digest))
            chain = digest
        return chain, rows

    def _notifier(self, batch: WriteBatch) -> Callable[[list[EventRecord]], None] | None:
        """What the writer thread calls after the commit: schedules `on_commit` on this event loop.

        The task images are copied now, on the loop, while the caller holds the records unchanged.
        """
        on_commit = self.on_commit
        if on_commit is None:
            return None
        image = TaskImage.of
        tasks = {r.task_id: image(r) for r in batch.new_tasks}
        for r in batch.changed_tasks.values():
            tasks[r.task_id] = image(r)
        # Ids the coordinator made (not the client): see `Committed.fresh_ids`.
        fresh_ids = frozenset([r.task_id for r in batch.new_tasks if not r.id_from_client])
        loop = asyncio.get_running_loop()

        def notify(events: list[EventRecord]) -> None:
            loop.call_soon_threadsafe(on_commit, Committed(tuple(events), tasks, fresh_ids))

        return notify

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

    async def verify_chain(self) -> ChainVerifier:
        """Walk the whole event log in chunks; the verifier tells the events checked, the newest id
        and the first break (or None)."""
        verifier = ChainVerifier(self._audit_key)
        last_id = 0
        while True:
            chunk = await self._db.fetch_all(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (last_id, VERIFY_CHUNK)
            )
            if not chunk or verifier.feed(chunk) is not None:
                break
            last_id = chunk[-1]["id"]
        return verifier


def _unrecorded(conn: sqlite3.Connection, events: list[EventRecord]) -> list[EventRecord]:
    """Drop events already in the log (a redelivery) or twice in the batch, keeping order."""
    ids = [e.event_id for e in events if e.event_id is not None]
    if not ids:
        return events
    seen: set[str] = set()
    for chunk in chunks(ids):
        rows = conn.execute(
            f"SELECT event_id FROM events WHERE event_id IN ({placeholders(len(chunk))})", chunk
        ).fetchall()
        seen.update(r[0] for r in rows)
    fresh = []
    for event in events:
        if event.event_id is not None:
            if event.event_id in seen:
                continue
            seen.add(event.event_id)
        fresh.append(event)
    return fresh
