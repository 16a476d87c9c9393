"""A standby refuses, in one clear line, to follow an active coordinator whose database has another
schema version (another claw version): the statements it ships are written for that schema. Its own
copy is left as it was. Real nats-server, real SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ClawConfig
from common.errors import MigrationError
from communication.connection import NatsConnection
from coordinator.standby import stream
from coordinator.standby.follower import Follower
from coordinator.standby.publisher import ReplicationPublisher
from storage.database import Database
from storage.migrations import LATEST_VERSION

KEY = b"k" * 32  # the replication HMAC key of this test's publisher and followers


async def _snapshot(conn: NatsConnection, config: ClawConfig, db: Database, epoch: int) -> None:
    """What an active coordinator does at the start of its epoch: its marker, then its snapshot."""
    publisher = ReplicationPublisher(
        conn, config.jetstream, key=KEY, epoch=epoch, node_id="a", keep_trying=lambda: True, on_fenced=lambda _: None
    )
    await publisher.begin(await db.commit_no())
    await publisher.snapshot(db)


@pytest.mark.parametrize("active_schema", [LATEST_VERSION + 1, LATEST_VERSION - 1], ids=["newer", "older"])
async def test_a_standby_refuses_an_active_of_another_schema_version_and_keeps_its_copy(
    config: ClawConfig, tmp_path: Path, active_schema: int
) -> None:
    conn = await NatsConnection.connect(config.nats, name="test-active")
    db = await Database.open(tmp_path / "active.db")
    copy = Follower(conn, config.jetstream, tmp_path / "copy.db", key=KEY)
    try:
        await stream.ensure_stream(conn, config.jetstream, config.coordinator)
        await _snapshot(conn, config, db, epoch=1)
        await copy.bootstrap()  # the same schema: followed
        await copy.close()
        before = (tmp_path / "copy.db").read_bytes()

        # The active coordinator restarts with another claw version (its schema migrated, or older).
        if active_schema > LATEST_VERSION:
            await db.run_script([("INSERT INTO schema_version VALUES (?, unixepoch())", (active_schema,))])
        else:
            await db.run_script([("DELETE FROM schema_version WHERE version > ?", (active_schema,))])
        await _snapshot(conn, config, db, epoch=2)

        with pytest.raises(MigrationError) as refused:
            await copy.bootstrap(newer_than_seq=copy.stream_seq + 1)
        message = str(refused.value)
        assert f"schema version {LATEST_VERSION}" in message and f"has version {active_schema}" in message
        assert "must run the same claw version" in message and "\n" not in message
        assert (tmp_path / "copy.db").read_bytes() == before  # nothing applied, nothing replaced
        assert not (tmp_path / "copy.db.incoming").exists()
    finally:
        await copy.close()
        await db.close()
        await conn.close()
