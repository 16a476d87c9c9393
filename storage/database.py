"""The SQLite state database: connections, pragmas and migrations.

The coordinator is the only writer. Its write connection lives on one thread of its own
(`_WriterThread`), and a whole transaction - every statement and the commit - is one call into that
thread: one hand-off per transaction instead of one per statement, which is what aiosqlite costs
(measured: 214 us for a 3-statement transaction through aiosqlite, 99 us as one call, 20 us of
SQLite work). API queries use a separate aiosqlite read connection; with WAL, readers never wait
for the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import aiosqlite

from common.errors import DatabaseDamagedError, MigrationError, StorageError
from common.log import get_logger
from storage.migrations import LATEST_VERSION, MIGRATIONS
from storage.replication import (
    RecordingConnection,
    ReplicatedCommit,
    Shipper,
    apply_commit,
    next_commit_no,
    read_commit_no,
)
from storage.sqlite_errors import DAMAGED, describe_sqlite_error, sqlite_error_name

log = get_logger("storage.database")

Statement = tuple[str, Sequence[Sequence[Any]]]
T = TypeVar("T")

# A write-ahead log this big has not restarted for a long time: someone holds an old snapshot open.
WAL_WARN_BYTES = 256 * 1024 * 1024


class WriteFence(Protocol):
    """Who may write: the coordinator's lease. Consulted before every transaction and its commit."""

    async def writable(self) -> None:
        """Return when a transaction may start (possibly after waiting); raise if none ever may."""
        ...

    def check(self) -> None:
        """Raise unless a commit may happen now; called on the writer thread just before it."""
        ...


@dataclass(frozen=True, slots=True)
class StorageFault:
    """Why the state database refuses writes, and since when (unix time)."""

    reason: str
    since: float


class _WriterThread:
    """One thread that owns the write connection; every call runs there, in submission order."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._conn: sqlite3.Connection | None = None

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, fn)

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None, "the writer connection is not open"
        return fn(self._conn)

    async def open(self, path: Path, synchronous: str, *, own_checkpoints: bool) -> None:
        """Connect on the writer thread (a sqlite3 connection stays on the thread that made it)."""

        def connect() -> None:
            conn = sqlite3.connect(path, isolation_level="DEFERRED")
            conn.row_factory = sqlite3.Row
            _apply_pragmas(conn, synchronous)
            if own_checkpoints:
                # No checkpoint inside a commit (they took 2-5 ms at the p99): `Database.checkpoint`
                # runs them from the read connection instead.
                conn.execute("PRAGMA wal_autocheckpoint=0")
            self._conn = conn

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        """Close the connection, then stop the thread."""

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        await asyncio.to_thread(self._executor.shutdown, True)  # the thread is idle: this returns at once


class Database:
    """An open state database (the writer thread and a read connection)."""

    def __init__(self, path: Path, writer: _WriterThread, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._wal_warned_bytes = 0
        self._fence: WriteFence | None = None
        # With replication on (a standby may follow): every commit is shipped before the caller resumes.
        self._shipper: Shipper | None = None
        # The last write's failure, until a write succeeds again (`claw status`, /metrics, submits).
        self.fault: StorageFault | None = None

    def set_fence(self, fence: WriteFence | None) -> None:
        """From now on, write only while `fence` allows it (its error is raised, nothing committed)."""
        self._fence = fence

    def set_shipper(self, shipper: Shipper | None) -> None:
        """From now on, record every transaction's writes and ship them after its commit
        (storage/replication.py); the caller resumes only once the shipper has them stored."""
        self._shipper = shipper

    async def commit_no(self) -> int:
        """The number of the last replicated commit this database holds."""
        return await self._writer.call(read_commit_no)

    async def backup_to(self, target: Path, position: Callable[[], int]) -> tuple[int, int]:
        """Copy the database as of its last commit into `target` (on the writer thread, so no commit
        comes in between); returns the copy's commit number and `position()` taken at that moment."""

        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            try:
                dst = sqlite3.connect(target)
                try:
                    conn.backup(dst)
                finally:
                    dst.close()
            except sqlite3.Error as exc:
                raise StorageError(f"the state database could not be copied: {describe_sqlite_error(exc)}") from exc
            return read_commit_no(conn), position()

        return await self._writer.call(run)

    async def apply_replicated(self, commit: ReplicatedCommit) -> None:
        """Apply a commit shipped by the active coordinator (a standby's write; no fence, no shipping)."""

        def run(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("BEGIN")
                apply_commit(conn, commit)
                conn.commit()
            except sqlite3.Error as exc:
                conn.rollback()
                raise StorageError(
                    f"replicated commit {commit.commit_no} could not be applied: {describe_sqlite_error(exc)}"
                ) from exc
            except BaseException:
                conn.rollback()
                raise

        await self._writer.call(run)

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        synchronous: Literal["normal", "full"] = "normal",
        own_checkpoints: bool = False,
        check: Literal["quick", "full", "off"] = "off",
    ) -> Database:
        """Open (creating if needed), check and migrate the database at `path`.

        With `own_checkpoints`, commits never checkpoint the write-ahead log: the caller must call
        `checkpoint()` every second or so (the coordinator's maintenance loop does). `check` runs
        SQLite's quick or full integrity check first and raises `DatabaseDamagedError` on a bad file.
        """
        path = Path(path)
        writer = _WriterThread()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            await writer.open(path, synchronous, own_checkpoints=own_checkpoints)
            if check != "off":
                await writer.call(lambda conn: _check_integrity(conn, path, full=check == "full"))
            await writer.call(_migrate)
            reader = await _connect(path, synchronous)
        except sqlite3.Error as exc:
            await writer.close()
            if sqlite_error_name(exc) in DAMAGED:
                raise DatabaseDamagedError(_damaged_message(path, str(exc))) from None
            raise StorageError(f"cannot open the state database {path}: {describe_sqlite_error(exc)}") from None
        except OSError as exc:
            await writer.close()
            raise StorageError(f"cannot create the state database {path}: {exc}") from None
        except BaseException:  # MigrationError, or the start being cancelled: no thread left behind
            await writer.close()
            raise
        return cls(path, writer, reader)

    async def close(self) -> None:
        """Close both connections."""
        await self._reader.close()
        await self._writer.close()

    async def transaction(
        self, fn: Callable[[sqlite3.Connection], T], *, on_commit: Callable[[T], None] | None = None
    ) -> T:
        """Run `fn(connection)` on the writer thread as one transaction: committed if it returns,
        rolled back if it raises (a StorageError when SQLite failed, else the exception itself) or
        if the write fence refuses it (its error).

        `on_commit(result)` runs on the writer thread right after the commit, so it happens even
        when the awaiting coroutine was cancelled meanwhile, and before the next transaction starts.
        """

        fence = self._fence
        if fence is not None:
            await fence.writable()
        shipper = self._shipper

        def run(conn: sqlite3.Connection) -> T:
            shipped: ReplicatedCommit | None = None
            try:
                if shipper is None:
                    result = fn(conn)
                else:
                    recording = RecordingConnection(conn)
                    result = fn(recording)  # type: ignore[arg-type]  # it has what `fn` calls
                    if recording.recorded:
                        shipped = ReplicatedCommit(next_commit_no(conn), recording.recorded)
                if fence is not None:
                    fence.check()
                conn.commit()
                self.fault = None
            except sqlite3.Error as exc:
                conn.rollback()
                self.fault = StorageFault(describe_sqlite_error(exc), time.time())
                raise StorageError(f"state database: {self.fault.reason}") from exc
            except BaseException:
                # Not SQLite's doing (a value it cannot bind, a bug in `fn`): the statements that
                # did run must not stay pending for the next transaction to commit.
                conn.rollback()
                raise
            if shipped is not None:
                shipper.ship(shipped)  # type: ignore[union-attr]  # set whenever `shipped` is
            if on_commit is not None:
                on_commit(result)
            return result

        return await self._writer.call(run)

    async def write(self, statements: Iterable[Statement]) -> None:
        """Run each (sql, rows) with executemany, all in one transaction; roll back on error."""
        todo = [(sql, rows) for sql, rows in statements if rows]

        def run(conn: sqlite3.Connection) -> None:
            for sql, rows in todo:
                conn.executemany(sql, rows)

        await self.transaction(run)

    async def run_script(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Run statements one by one (DDL allowed) in one transaction; roll back on error."""
        todo = list(statements)
        fence = self._fence
        if fence is not None:
            await fence.writable()
        shipper = self._shipper

        def run(conn: sqlite3.Connection) -> None:
            shipped: ReplicatedCommit | None = None
            try:
                conn.execute("BEGIN")
                for sql, params in todo:
                    conn.execute(sql, params)
                if shipper is not None:
                    shipped = ReplicatedCommit(next_commit_no(conn), [("x", sql, list(p)) for sql, p in todo])
                if fence is not None:
                    fence.check()
                conn.commit()
            except sqlite3.Error as exc:
                conn.rollback()
                raise StorageError(f"state database maintenance failed: {describe_sqlite_error(exc)}") from exc
            except BaseException:
                conn.rollback()
                raise
            if shipped is not None:
                shipper.ship(shipped)  # type: ignore[union-attr]

        await self._writer.call(run)

    async def checkpoint(self) -> None:
        """Copy the write-ahead log into the database file, mostly off the writer thread.

        Two PASSIVE passes (neither blocks on readers): the read connection copies the bulk while
        commits go on, then the writer thread copies the few frames appended meanwhile. Only a
        checkpoint that has caught up with the last commit lets SQLite restart the log from its
        start; under constant load the first pass alone never does, and the log grows without end.
        """
        try:
            async with self._reader.execute("PRAGMA wal_checkpoint(PASSIVE)"):
                pass
            wal_bytes = await self._writer.call(_passive_checkpoint)
        except sqlite3.Error as exc:
            log.warning("storage.checkpoint_failed", error=str(exc))
            return
        if wal_bytes < WAL_WARN_BYTES:
            self._wal_warned_bytes = 0
        elif wal_bytes >= 2 * self._wal_warned_bytes:  # once, then at every doubling
            self._wal_warned_bytes = wal_bytes
            log.warning(
                "storage.wal_not_restarting",
                wal_mb=round(wal_bytes / 2**20),
                db=str(self.path),
                hint="a reader keeps an old snapshot open (an sqlite3 shell or a backup tool in a transaction?);"
                " the log restarts once it ends",
            )

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of a read query."""
        async with self._reader.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """The first row of a read query, or None."""
        async with self._reader.execute(sql, params) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    async def fetch_all_writer(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A read on the write connection: sees the writer's own committed state in order with writes."""

        def run(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"state database read failed: {exc}") from exc

        return await self._writer.call(run)


async def _connect(path: Path, synchronous: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path)
    conn.row_factory = sqlite3.Row
    for pragma in _pragmas(synchronous):
        await conn.execute(pragma)
    return conn


def _pragmas(synchronous: str) -> list[str]:
    return [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous.upper()}",
        "PRAGMA busy_timeout=5000",
        "PRAGMA foreign_keys=ON",
        # After a checkpoint has caught up, a log that grew under a burst is cut back to 64 MB.
        "PRAGMA journal_size_limit=67108864",
    ]


def _passive_checkpoint(conn: sqlite3.Connection) -> int:
    """Checkpoint what no reader needs; returns the size of the log still in use, in bytes."""
    _busy, log_frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
    return max(int(log_frames), 0) * page_size


INTEGRITY_PROBLEMS_SHOWN = 3


def _damaged_message(path: Path, detail: str) -> str:
    return (
        f"the state database {path} is damaged ({detail}); the coordinator will not serve from it: "
        "restore it from a backup (docs/RUNBOOK.md, 'A damaged state database'), or move it aside to "
        "start with an empty one"
    )


def _check_integrity(conn: sqlite3.Connection, path: Path, *, full: bool) -> None:
    """SQLite's quick or full integrity check; raises `DatabaseDamagedError` with its first problems."""
    pragma = "integrity_check" if full else "quick_check"
    rows = [row[0] for row in conn.execute(f"PRAGMA {pragma}({INTEGRITY_PROBLEMS_SHOWN})").fetchall()]
    if rows != ["ok"]:
        raise DatabaseDamagedError(_damaged_message(path, "; ".join(rows)))


def _apply_pragmas(conn: sqlite3.Connection, synchronous: str) -> None:
    for pragma in _pragmas(synchronous):
        conn.execute(pragma)


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at REAL)")
    conn.commit()
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    current = (row[0] if row else None) or 0
    if current > LATEST_VERSION:
        raise MigrationError(
            f"the state database has schema version {current}, newer than this version of claw "
            f"understands ({LATEST_VERSION}): upgrade claw or point --db at another file"
        )
    for version, description, sql in MIGRATIONS:
        if version <= current:
            continue
        try:
            conn.executescript(f"BEGIN;\n{sql}\nINSERT INTO schema_version VALUES ({version}, unixepoch());\nCOMMIT;")
        except sqlite3.Error as exc:
            conn.rollback()
            raise MigrationError(f"migration {version} ({description}) failed: {exc}") from exc
        log.info("storage.migrated", version=version, description=description)
