"""Statement recording and replay (storage/replication.py) on real SQLite, without NATS."""

from __future__ import annotations

import sqlite3

import pytest

from common.errors import StorageError
from storage.replication import (
    RecordingConnection,
    ReplicatedCommit,
    apply_commit,
    decode_commit,
    dump,
    encode_commit,
)

SCHEMA = "CREATE TABLE t (k INTEGER PRIMARY KEY AUTOINCREMENT, v BLOB); CREATE TABLE replication (id INTEGER PRIMARY KEY, commit_no INTEGER); INSERT INTO replication VALUES (1, 0);"  # noqa: E501


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    return conn


def test_writes_are_recorded_reads_are_not_and_a_generator_of_rows_is_kept_whole() -> None:
    active = _db()
    recording = RecordingConnection(active)
    recording.execute("INSERT INTO t (v) VALUES (?)", (b"\x00",))
    recording.executemany("INSERT INTO t (v) VALUES (?)", ((x,) for x in ("a", None, 1.5)))
    assert recording.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 4
    recording.execute("  pragma user_version")
    assert [kind for kind, _, _ in recording.recorded] == ["x", "m"]
    assert recording.recorded[1][2] == [["a"], [None], [1.5]]  # the generator, materialised once

    commit = decode_commit(encode_commit(ReplicatedCommit(1, recording.recorded)))
    copy = _db()
    apply_commit(copy, commit)
    copy.commit()
    active.execute("UPDATE replication SET commit_no = 1")
    active.commit()
    assert dump(copy) == dump(active)  # same rowids, same types (bytes stay bytes, floats floats)


def test_a_body_that_is_no_commit_is_one_clear_error() -> None:
    with pytest.raises(StorageError, match="could not be read"):
        decode_commit(b"\x93garbage")
