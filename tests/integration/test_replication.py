"""Statement shipping (storage/replication.py, coordinator/standby): a database built from the
replication stream equals the active coordinator's, on a real nats-server and real SQLite."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import msgspec
import pytest

from common.config import ClawConfig
from common.errors import ClawError, LeaseLostError
from common.models import TaskView
from common.states import TaskState
from communication.api_client import ClawClient
from communication.connection import NatsConnection
from coordinator.standby import stream
from coordinator.standby.follower import Follower
from coordinator.standby.publisher import ReplicationPublisher
from coordinator.standby.runner import run_coordinator
from coordinator.standby.stream import replication_key
from storage.audit_anchor import key_path
from storage.database import Database
from storage.replication import dump
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online

KEY = b"k" * 32  # the replication HMAC key of the tests that publish themselves


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dump(conn)
    finally:
        conn.close()


def _replicating(config: ClawConfig) -> ClawConfig:
    return msgspec.structs.replace(config, coordinator=msgspec.structs.replace(config.coordinator, replication=True))


async def test_a_database_built_from_the_stream_equals_the_active_coordinators(
    config: ClawConfig, tmp_path: Path
) -> None:
    config = _replicating(config)
    copy_path = tmp_path / "standby" / "claw.db"
    async with running_coordinator(config) as coordinator:
        conn = await NatsConnection.connect(config.nats, name="test-follower")
        key = await asyncio.to_thread(replication_key, config.coordinator.db_path)  # the active one's
        follower = Follower(conn, config.jetstream, copy_path, key=key)
        # Bootstrapped from the start's snapshot while the active one works on.
        await follower.bootstrap()
        async with running_worker(config), connected_client(config) as client:
            await wait_nodes_online(client, 1)
            submitted = await client.submit_many([spec("echo", {"n": i}) for i in range(40)])
            states = await client.wait([s.task_id for s in submitted], timeout_s=60)
            assert set(states.values()) == {TaskState.SUCCEEDED}
        assert coordinator.replication is not None and coordinator.replication.shipped > 0
    # The active one has stopped (its last commits shipped); the copy applies the stream to its end.
    try:
        await follower.catch_up()
        assert follower.commit_no > 0
    finally:
        await follower.close()
        await conn.close()
    active = _dump(Path(config.coordinator.db_path))
    assert any('INSERT INTO "tasks"' in line for line in active)
    assert _dump(copy_path) == active


async def test_bytes_nulls_floats_and_a_commit_bigger_than_a_message_replicate_exactly(
    config: ClawConfig, tmp_path: Path
) -> None:
    conn = await NatsConnection.connect(config.nats, name="test-active")
    db = await Database.open(tmp_path / "active.db")
    copy = Follower(conn, config.jetstream, tmp_path / "copy.db", key=KEY)
    fenced: list[str] = []
    try:
        await stream.ensure_stream(conn, config.jetstream, config.coordinator)
        publisher = ReplicationPublisher(
            conn, config.jetstream, key=KEY, epoch=1, node_id="a", keep_trying=lambda: False, on_fenced=fenced.append
        )
        await publisher.begin(await db.commit_no())
        await publisher.snapshot(db)
        db.set_shipper(publisher)
        await db.run_script([("CREATE TABLE t (k INTEGER PRIMARY KEY AUTOINCREMENT, v BLOB, f REAL, s TEXT)", ())])
        await db.write([("INSERT INTO t (v, f, s) VALUES (?, ?, ?)", [(b"\x00\xff", 0.1, None), (None, 1e300, "é")])])
        big = b"x" * (stream.PART_BYTES * 2 + 17)  # three messages
        await db.write([("INSERT INTO t (v, f, s) VALUES (?, ?, ?)", [(big, -0.0, "big")])])

        def update(c: sqlite3.Connection) -> int:
            c.execute("UPDATE t SET s = ? WHERE k = ?", ("changed", 1))
            return int(c.execute("SELECT COUNT(*) FROM t").fetchone()[0])  # a read: not shipped

        assert await db.transaction(update) == 3
        await copy.bootstrap()
        assert await copy.catch_up() == await db.commit_no() == 4
        await copy.close()
        assert _dump(tmp_path / "copy.db") == _dump(tmp_path / "active.db")

        # Another coordinator's epoch marker fences this one: its next commit is refused by the stream.
        other = ReplicationPublisher(
            conn, config.jetstream, key=KEY, epoch=2, node_id="b", keep_trying=lambda: False, on_fenced=fenced.append
        )
        await other.begin(4)
        with pytest.raises(LeaseLostError, match="fenced"):
            await db.write([("INSERT INTO t (s) VALUES (?)", [("late",)])])
        assert fenced
        info = await conn.js.stream_info(stream.stream_name(conn))
        assert info.state.last_seq == publisher.last_seq + 1  # only the marker came after it
    finally:
        await copy.close()
        await db.close()
        await conn.close()


async def test_a_copy_that_missed_commits_bootstraps_again(config: ClawConfig, tmp_path: Path) -> None:
    """A gap (a snapshot newer than the copy) is noticed, and the copy is rebuilt from the snapshot."""
    conn = await NatsConnection.connect(config.nats, name="test-active")
    db = await Database.open(tmp_path / "active.db")
    copy = Follower(conn, config.jetstream, tmp_path / "copy.db", key=KEY)
    try:
        await stream.ensure_stream(conn, config.jetstream, config.coordinator)
        publisher = ReplicationPublisher(
            conn, config.jetstream, key=KEY, epoch=1, node_id="a", keep_trying=lambda: True, on_fenced=lambda _: None
        )
        await publisher.begin(0)
        await publisher.snapshot(db)
        db.set_shipper(publisher)
        await db.run_script([("CREATE TABLE t (k INTEGER PRIMARY KEY, s TEXT)", ())])
        await copy.bootstrap()
        await copy.catch_up()
        # A restart of the active from a database ahead of the stream (commits never shipped).
        db.set_shipper(None)
        await db.write([("INSERT INTO t VALUES (?, ?)", [(1, "unshipped")])])
        await db.run_script([("UPDATE replication SET commit_no = commit_no + 1", ())])
        restarted = ReplicationPublisher(
            conn, config.jetstream, key=KEY, epoch=5, node_id="a", keep_trying=lambda: True, on_fenced=lambda _: None
        )
        await restarted.begin(await db.commit_no())
        await restarted.snapshot(db)
        db.set_shipper(restarted)
        await db.write([("INSERT INTO t VALUES (?, ?)", [(2, "after")])])
        with pytest.raises(Exception, match="epoch 5 started at commit 2"):
            await copy.catch_up()
        await copy.bootstrap()
        await asyncio.wait_for(copy.catch_up(), 10)
        await copy.close()
        assert _dump(tmp_path / "copy.db") == _dump(tmp_path / "active.db")
    finally:
        await copy.close()
        await db.close()
        await conn.close()


async def test_a_coordinator_started_on_a_fresh_database_behind_the_stream_rebuilds_it_first(
    config: ClawConfig, tmp_path: Path
) -> None:
    """The active one stopped cleanly; another starts with an empty database on another machine: it
    takes the free lease, and serves what the first one had, not an empty state."""
    config = _replicating(config)
    async with running_coordinator(config), connected_client(config) as client:
        submitted = await client.submit(spec("echo", {"n": 1}))
    fresh = msgspec.structs.replace(
        config, coordinator=msgspec.structs.replace(config.coordinator, db_path=str(tmp_path / "b" / "claw.db"))
    )
    # Its key: a copy of the first one's (docs/RUNBOOK.md, "A standby coordinator").
    (tmp_path / "b" / "auth").mkdir(parents=True, mode=0o700)
    shutil.copy2(key_path(config.coordinator.db_path), key_path(fresh.coordinator.db_path))
    stop = asyncio.Event()
    task = asyncio.create_task(run_coordinator(fresh, stop))
    try:
        async with connected_client(fresh) as client:
            view = await eventually(lambda: _task_or_none(client, submitted.task_id), timeout_s=30, what="the task")
        assert view.task_id == submitted.task_id
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    with sqlite3.connect(f"file:{tmp_path / 'b' / 'claw.db'}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM tasks WHERE task_id = ?", (submitted.task_id,)).fetchone()[0] == 1


async def _task_or_none(client: ClawClient, task_id: str) -> TaskView | None:
    try:
        return await client.get_task(task_id)
    except ClawError:
        return None
