"""Statement shipping: what a committed transaction changed, as the statements that changed it.

An active coordinator with replication on records every statement a transaction executes (except
reads) and the transaction's commit number, which it keeps in the one-row table `replication` in
the same transaction. After the commit, and before anything else happens (the caller has not
resumed: no client was answered, no event acked), the batch is shipped: published to the stream
`<PREFIX>_REPL` and acknowledged by JetStream (coordinator/standby). A standby applies the batches in
commit order to its own copy of the database, so it holds what the active held after each commit.

Replaying statements gives the same database because every value a statement writes is a parameter
computed by the active (no `unixepoch()`, `random()` or the like in the coordinator's writes), and
rows get the same rowids when the same statements run in the same order on the same state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import msgspec

from common.errors import StorageError

# ("x", sql, params) for execute, ("m", sql, rows) for executemany.
RecordedStatement = tuple[str, str, Any]
SET_COMMIT_NO = "UPDATE replication SET commit_no = ? WHERE id = 1"
READ_COMMIT_NO = "SELECT commit_no FROM replication WHERE id = 1"


class ReplicatedCommit(msgspec.Struct, frozen=True, array_like=True):
    """One committed transaction as shipped: its number and the statements it executed, in order."""

    commit_no: int
    statements: list[RecordedStatement]


class Shipper(Protocol):
    """Where committed batches go (the active's publisher); called on the database's writer thread."""

    def ship(self, commit: ReplicatedCommit) -> None:
        """Return once the commit is stored for the standbys; raise if it never will be."""
        ...


def _is_read(sql: str) -> bool:
    head = sql.lstrip()[:8].upper()
    return head.startswith(("SELECT", "PRAGMA", "EXPLAIN"))


class RecordingConnection:
    """The writer connection as a transaction's function sees it: executes, and records the writes."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.recorded: list[RecordedStatement] = []

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        """`sqlite3.Connection.execute`, recording the statement unless it only reads."""
        if not _is_read(sql):
            params = dict(parameters) if isinstance(parameters, dict) else list(parameters)
            self.recorded.append(("x", sql, params))
            return self._conn.execute(sql, params)
        return self._conn.execute(sql, parameters)

    def executemany(self, sql: str, rows: Iterable[Any]) -> sqlite3.Cursor:
        """`sqlite3.Connection.executemany`, recording the statement and every row."""
        materialized = [dict(r) if isinstance(r, dict) else list(r) for r in rows]
        self.recorded.append(("m", sql, materialized))
        return self._conn.executemany(sql, materialized)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def next_commit_no(conn: sqlite3.Connection) -> int:
    """Advance the commit number inside the open transaction; returns the new number."""
    row = conn.execute(READ_COMMIT_NO).fetchone()
    commit_no = (row[0] if row else 0) + 1
    conn.execute(SET_COMMIT_NO, (commit_no,))
    return commit_no


def read_commit_no(conn: sqlite3.Connection) -> int:
    """The number of the last commit this database holds (0: none shipped yet)."""
    row = conn.execute(READ_COMMIT_NO).fetchone()
    return int(row[0]) if row else 0


def apply_commit(conn: sqlite3.Connection, commit: ReplicatedCommit) -> None:
    """Run a shipped commit's statements and set its number (in the caller's open transaction)."""
    for kind, sql, params in commit.statements:
        if kind == "m":
            conn.executemany(sql, params)
        else:
            conn.execute(sql, params)
    conn.execute(SET_COMMIT_NO, (commit.commit_no,))


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ReplicatedCommit)


def encode_commit(commit: ReplicatedCommit) -> bytes:
    """The commit as a stream message body (MessagePack keeps bytes, ints and floats apart)."""
    return _encoder.encode(commit)


def decode_commit(data: bytes) -> ReplicatedCommit:
    """A stream message body back to a commit; `StorageError` when it is not one."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise StorageError(f"a replicated commit could not be read: {exc}") from None


def dump(conn: sqlite3.Connection, skip_tables: Sequence[str] = ()) -> list[str]:
    """Every table's rows as SQL text (what two copies of a database compare by)."""
    return [line for line in conn.iterdump() if not any(f'"{t}"' in line[:40] for t in skip_tables)]
