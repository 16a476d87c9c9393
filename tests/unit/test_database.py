"""The state database's writer thread: one call per transaction, rollback on failure, and WAL
checkpoints outside commits when the owner asks for it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from common.errors import StorageError
from storage.database import Database


async def test_a_failed_transaction_is_rolled_back_whole(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "claw.db")
    try:
        await db.write([("INSERT INTO approvals (task_id, approver, decision, note, at) VALUES (?, ?, ?, ?, ?)",
                         [("t1", "ann", "approve", None, 1.0)])])  # fmt: skip
        with pytest.raises(StorageError, match="state database: "):
            await db.write(
                [
                    ("INSERT INTO approvals (task_id, approver, decision, note, at) VALUES (?, ?, ?, ?, ?)",
                     [("t2", "bob", "approve", None, 2.0)]),
                    ("INSERT INTO no_such_table VALUES (?)", [(1,)]),
                ]
            )  # fmt: skip
        rows = await db.fetch_all("SELECT task_id FROM approvals ORDER BY id")
        assert [r[0] for r in rows] == ["t1"]
    finally:
        await db.close()


async def test_with_own_checkpoints_commits_leave_the_log_to_checkpoint(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "claw.db", own_checkpoints=True)
    try:
        assert await db.transaction(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
        rows = [(f"t{i}", "ann", "approve", "x" * 2000, float(i)) for i in range(3000)]  # ~6 MB: past 1000 pages
        await db.write([("INSERT INTO approvals (task_id, approver, decision, note, at) VALUES (?, ?, ?, ?, ?)", rows)])
        path, wal = tmp_path / "claw.db", tmp_path / "claw.db-wal"
        # The pages are all in the log: no commit copied them into the database file.
        assert wal.stat().st_size > 5_000_000 and path.stat().st_size < 1_000_000
        await db.checkpoint()
        assert path.stat().st_size > 5_000_000
    finally:
        await db.close()


async def test_checkpoints_alongside_constant_commits_keep_the_log_from_growing(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "claw.db", own_checkpoints=True)
    try:
        txn = [(f"t{i}", "ann", "approve", "x" * 2000, float(i)) for i in range(100)]  # ~200 kB a commit
        for _ in range(60):  # ~12 MB written in all, each commit racing a checkpoint
            await asyncio.gather(
                db.write(
                    [("INSERT INTO approvals (task_id, approver, decision, note, at) VALUES (?, ?, ?, ?, ?)", txn)]
                ),
                db.checkpoint(),
            )
        # A checkpoint that caught up lets the next commit restart the log from its start.
        assert (tmp_path / "claw.db-wal").stat().st_size < 1_500_000
    finally:
        await db.close()


async def test_an_error_that_is_not_sqlites_still_rolls_the_transaction_back(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "claw.db")
    insert = "INSERT INTO approvals (task_id, approver, decision, note, at) VALUES (?, ?, ?, ?, ?)"
    try:

        def half_then_unbindable(conn: sqlite3.Connection) -> None:
            conn.execute(insert, ("t1", "ann", "approve", None, 1.0))
            conn.execute(insert, ("t2", "ann", "approve", None, 2**70))  # OverflowError, not sqlite3.Error

        with pytest.raises(OverflowError):
            await db.transaction(half_then_unbindable)
        await db.write([(insert, [("t3", "bob", "approve", None, 3.0)])])
        rows = await db.fetch_all("SELECT task_id FROM approvals ORDER BY id")
        assert [r[0] for r in rows] == ["t3"]  # t1 was not committed along with t3
    finally:
        await db.close()


async def test_on_commit_runs_after_the_commit_even_when_the_caller_was_cancelled(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "claw.db")
    inside, release = threading.Event(), threading.Event()
    seen: list[int] = []
    try:

        def slow(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO approvals (task_id, approver, decision, note, at) VALUES ('t', 'a', 'x', NULL, 1)"
            )
            inside.set()
            release.wait(30)
            return 7

        caller = asyncio.create_task(db.transaction(slow, on_commit=seen.append))
        assert await asyncio.to_thread(inside.wait, 30)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        # The writer thread runs calls in order: this one starts after `slow` committed.
        count = await db.transaction(lambda conn: conn.execute("SELECT COUNT(*) FROM approvals").fetchone()[0])
        assert count == 1 and seen == [7]
    finally:
        release.set()
        await db.close()


async def test_a_log_held_open_by_an_old_reader_is_reported_once_per_doubling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structlog.testing import capture_logs

    import storage.database

    monkeypatch.setattr(storage.database, "WAL_WARN_BYTES", 1_000_000)
    db = await Database.open(tmp_path / "claw.db", own_checkpoints=True)
    insert = "INSERT INTO approvals (task_id, approver, decision, note, at) VALUES (?, ?, ?, ?, ?)"
    shell = sqlite3.connect(tmp_path / "claw.db", isolation_level=None)  # someone's sqlite3 shell
    try:
        shell.execute("BEGIN")
        shell.execute("SELECT COUNT(*) FROM approvals").fetchone()  # holds its snapshot from here on
        with capture_logs() as logs:
            for round_ in range(6):  # ~0.6 MB a round: the log passes 1, 2 (and not 4) MB
                await db.write([(insert, [(f"t{round_}-{i}", "a", "x", "y" * 2000, 1.0) for i in range(300)])])
                await db.checkpoint()
        warned = [e for e in logs if e["event"] == "storage.wal_not_restarting"]
        assert len(warned) == 2 and warned[0]["wal_mb"] >= 1 and "reader" in warned[0]["hint"]
        shell.execute("COMMIT")  # the reader lets go: the log restarts and the warning is re-armed
        await db.write([(insert, [("after", "a", "x", None, 2.0)])])
        await db.checkpoint()
        await db.write([(insert, [("after-2", "a", "x", None, 3.0)])])
        with capture_logs() as logs:
            await db.checkpoint()
        assert not [e for e in logs if e["event"] == "storage.wal_not_restarting"]
    finally:
        shell.close()
        await db.close()
