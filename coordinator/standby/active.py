"""Replication on an active coordinator: set up before its first write, snapshots on a timer.

Registered as a feature (`register(coordinator)`): when `coordinator.replication` is on, the
`replication-snapshot` job stores a fresh snapshot every `replication_snapshot_interval_s`, so a
standby that starts later bootstraps from a recent copy and the stream need keep only what came
after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.config import ClawConfig
from communication.connection import NatsConnection
from coordinator.lease import CoordinatorLease
from coordinator.periodic_jobs import PeriodicJob
from coordinator.standby import stream
from coordinator.standby.publisher import ReplicationPublisher
from storage.database import Database

if TYPE_CHECKING:
    from coordinator.service import Coordinator


async def start_replication(
    conn: NatsConnection, config: ClawConfig, lease: CoordinatorLease, db: Database, *, snapshot: bool
) -> ReplicationPublisher:
    """Mark this epoch in the stream, store a snapshot (unless the database is the stream's end, as
    after a takeover) and ship every commit from now on."""
    await stream.ensure_stream(conn, config.jetstream, config.coordinator)
    await stream.snapshot_store(conn, config.jetstream)
    publisher = ReplicationPublisher(
        conn, config.jetstream, epoch=lease.revision, node_id=lease.holder.node_id,
        keep_trying=lease.may_keep_trying, on_fenced=lease.declare_lost,
    )  # fmt: skip
    await publisher.begin(await db.commit_no())
    if snapshot:
        await publisher.snapshot(db)
    db.set_shipper(publisher)
    return publisher


def register(c: Coordinator) -> None:
    """The periodic snapshot, when replication is on."""
    publisher = c.replication
    if publisher is None:
        return
    every_s = c.config.coordinator.replication_snapshot_interval_s

    async def snapshot() -> None:
        await publisher.snapshot(c.db)

    c.jobs.add(PeriodicJob("replication-snapshot", every_s, snapshot, first_after_s=every_s, writes=False))
