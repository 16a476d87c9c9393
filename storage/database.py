"""The SQLite state database: connections, pragmas and migrations.

The coordinator is the only writer. It holds one write connection, on which every change is a batched
transaction, and one read connection for API queries; with WAL, readers never wait for the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from common.errors import MigrationError, StorageError
from common.log import get_logger
from storage.migrations import LATEST_VERSION, MIGRATIONS

log = get_logger("storage.database")

Statement = tuple[str, Sequence[Sequence[Any]]]


class Database:
    """An open state database (write and read connections)."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        # One transaction at a time on the writer: coroutines must not interleave their statements.
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path, *, synchronous: Literal["normal", "full"] = "normal") -> Database:
        """Open (creating if needed) and migrate the database at `path`."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = await _connect(path, synchronous)
            await _migrate(writer)
            reader = await _connect(path, synchronous)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the state database {path}: {exc}") from None
        except OSError as exc:
            raise StorageError(f"cannot create the state database {path}: {exc}") from None
        return cls(path, writer, reader)

    async def close(self) -> None:
        """Close both connections."""
        await self._reader.close()
        await self._writer.close()

    async def write(self, statements: Iterable[Statement]) -> None:
        """Run each (sql, rows) with executemany, all in one transaction; roll back on error."""
        async with self._write_lock:
            try:
                for sql, rows in statements:
                    if rows:
                        await self._writer.executemany(sql, rows)
                await self._writer.commit()
            except sqlite3.Error as exc:
                await self._writer.rollback()
                raise StorageError(f"state database write failed: {exc}") from exc

    async def run_script(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Run statements one by one (DDL allowed) in one transaction; roll back on error."""
        async with self._write_lock:
            try:
                await self._writer.execute("BEGIN")
                for sql, params in statements:
                    await self._writer.execute(sql, params)
                await self._writer.commit()
            except sqlite3.Error as exc:
                await self._writer.rollback()
                raise StorageError(f"state database maintenance failed: {exc}") from exc

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
        async with self._write_lock, self._writer.execute(sql, params) as cursor:
            return list(await cursor.fetchall())


async def _connect(path: Path, synchronous: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path)
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    await conn.execute("PRAGMA busy_timeout=5000")
    await conn.execute("PRAGMA foreign_keys=ON")
    return conn


async def _migrate(conn: aiosqlite.Connection) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at REAL)")
    async with conn.execute("SELECT MAX(version) FROM schema_version") as cursor:
        row = await cursor.fetchone()
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
            await conn.executescript(
                f"BEGIN;\n{sql}\nINSERT INTO schema_version VALUES ({version}, unixepoch());\nCOMMIT;"
            )
        except sqlite3.Error as exc:
            await conn.rollback()
            raise MigrationError(f"migration {version} ({description}) failed: {exc}") from exc
        log.info("storage.migrated", version=version, description=description)
