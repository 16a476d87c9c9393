"""Replication on an active coordinator: set up before its first write, snapshots on a timer.

Registered as a feature (`register(coordinator)`): when `coordinator.replication` is on, the
`replication-snapshot` job stores a fresh snapshot every `replication_snapshot_interval_s`, so a
standby that starts later bootstraps from a recent copy and the stream need keep only what came
after it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nats.js.errors import KeyNotFoundError, NoKeysError

from common.config import ClawConfig
from common.log import get_logger
from common.models import ReplicationView, StandbyView
from communication.codec import DecodeError, decode
from communication.connection import NATS_ERRORS, NatsConnection
from coordinator.lease import CoordinatorLease
from coordinator.periodic_jobs import PeriodicJob
from coordinator.standby import stream
from coordinator.standby.publisher import ReplicationPublisher
from storage.database import Database

log = get_logger("coordinator.standby.active")

if TYPE_CHECKING:
    from coordinator.service import Coordinator


async def publisher_for(conn: NatsConnection, config: ClawConfig, lease: CoordinatorLease) -> ReplicationPublisher:
    """The publisher of the epoch `lease` starts (its revision), fenced by it."""
    key = await asyncio.to_thread(stream.replication_key, config.coordinator.db_path)
    return ReplicationPublisher(
        conn, config.jetstream, key=key, epoch=lease.revision, node_id=lease.holder.node_id,
        keep_trying=lease.may_keep_trying, on_fenced=lease.declare_lost,
    )  # fmt: skip


async def start_replication(
    conn: NatsConnection, config: ClawConfig, lease: CoordinatorLease, db: Database
) -> ReplicationPublisher:
    """Mark this epoch in the stream as starting from this database, store a snapshot of it, and
    ship every commit from now on."""
    await stream.ensure_stream(conn, config.jetstream, config.coordinator)
    await stream.snapshot_store(conn, config.jetstream)
    publisher = await publisher_for(conn, config, lease)
    await publisher.begin(await db.commit_no())
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


async def replication_view(
    conn: NatsConnection, config: ClawConfig, publisher: ReplicationPublisher
) -> ReplicationView:
    """`claw status`: this coordinator's epoch and last commit, and each standby's last report."""
    standbys: list[StandbyView] = []
    try:
        kv = await stream.standbys_kv(conn, config.jetstream)
        try:
            keys = await kv.keys()
        except NoKeysError:
            keys = []
        for key in keys:
            try:
                entry = await kv.get(key)
                report = decode(entry.value or b"", stream.StandbyStatus)
            except (KeyNotFoundError, DecodeError):
                continue  # lapsed meanwhile, or written by another version
            lag = max(publisher.commit_no - report.commit_no, 0)
            view = StandbyView(
                node_id=report.node_id, host=report.host, commit_no=report.commit_no, lag_commits=lag,
                reported_at=report.at,
            )  # fmt: skip
            standbys.append(view)
    except NATS_ERRORS as exc:
        log.warning("replication.standbys_unreadable", error=str(exc) or type(exc).__name__)
    return ReplicationView(
        active_node_id=publisher.node_id, epoch=publisher.epoch, commit_no=publisher.commit_no,
        stream_seq=publisher.last_seq, standbys=sorted(standbys, key=lambda v: v.node_id),
    )  # fmt: skip
