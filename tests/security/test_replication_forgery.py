"""Attacks on the replication stream: a standby executes what it reads on `<prefix>.repl`, so whoever
else can publish there (a worker's credentials, anyone on an open bus) must not get a statement run.

A forged commit (the next commit number, the current epoch, `DELETE FROM tasks`) and a forged epoch
marker (which would make standbys throw their copy away) are published while a replicating
coordinator runs: a standby refuses both (their HMAC is not the coordinators' key), and the active
coordinator, whose next publish the stream refuses because the foreign messages moved its last
sequence, sees they are not signed and goes on instead of stopping.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgspec

from common.config import ClawConfig
from communication.codec import encode
from communication.connection import NatsConnection
from coordinator.standby import stream
from coordinator.standby.follower import Follower
from coordinator.standby.stream import EpochMarker, replication_key
from storage.replication import ReplicatedCommit, dump, encode_commit
from tests.helpers import connected_client, running_coordinator, spec


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dump(conn)
    finally:
        conn.close()


async def test_forged_commits_and_markers_are_never_applied_and_do_not_stop_the_active(
    config: ClawConfig, tmp_path: Path
) -> None:
    config = msgspec.structs.replace(config, coordinator=msgspec.structs.replace(config.coordinator, replication=True))
    copy_path = tmp_path / "standby" / "claw.db"
    attacker = await NatsConnection.connect(config.nats, name="attacker")
    watcher = await NatsConnection.connect(config.nats, name="standby")
    key = await asyncio.to_thread(replication_key, config.coordinator.db_path)
    follower = Follower(watcher, config.jetstream, copy_path, key=key)
    try:
        async with running_coordinator(config) as coordinator, connected_client(config) as client:
            first = await client.submit(spec("echo", {"n": 1}))
            await follower.bootstrap()
            await follower.catch_up()
            publisher = coordinator.replication
            assert publisher is not None
            epoch, next_commit = str(publisher.epoch), str(publisher.commit_no + 1)
            forged = encode_commit(ReplicatedCommit(publisher.commit_no + 1, [("x", "DELETE FROM tasks", [])]))
            await attacker.js.publish(
                stream.subject(attacker), forged,
                headers={stream.H_EPOCH: epoch, stream.H_COMMIT: next_commit, stream.H_PART: "1/1",
                         stream.H_MAC: "0" * 64},
            )  # fmt: skip
            marker = EpochMarker(epoch=publisher.epoch + 1, node_id="evil", host="evil", commit_no=999, at=0.0)
            await attacker.js.publish(
                stream.subject(attacker), encode(marker),
                headers={stream.H_EPOCH: str(publisher.epoch + 1), stream.H_MARKER: "epoch"},
            )  # fmt: skip
            # The active one's next commit goes through (it is not fenced by foreign messages).
            second = await client.submit(spec("echo", {"n": 2}))
            assert not coordinator._lease.lost.is_set()
            await follower.catch_up()
            assert follower.refused == 2
            assert follower.epoch == publisher.epoch  # the forged marker changed nothing
        await follower.catch_up()  # what the active one wrote while stopping
    finally:
        await follower.close()
        await watcher.close()
        await attacker.close()
    copy = _dump(copy_path)
    assert copy == _dump(Path(config.coordinator.db_path))
    assert any(first.task_id in line for line in copy) and any(second.task_id in line for line in copy)
