"""`claw coordinator start` with replication on: active if the lease is free, else a standby.

A standby keeps its own database current from the replication stream (coordinator/standby/follower),
reports its position every second in the KV bucket `<prefix>_standbys` (what `claw status` shows),
and tries to take the lease every `POLL_S`. The lease lapses `lease_ttl_s` after the active
coordinator's last renewal (at once when it stops cleanly); then the standby takes it, appends its
epoch marker (from then on the stream refuses the former active), applies the stream to its end and
starts serving from its copy, exactly as the former active would have after a restart at its last
replicated commit. Takeover time: what was left of the lease (at most `lease_ttl_s`), plus the
catch-up (the lag, normally a few commits), plus the coordinator's start (loading the working set).

A coordinator that takes a free lease at start first makes sure its database is not behind the
stream (a fresh machine, or a former standby): it is rebuilt from the snapshot and the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
from nats.js.errors import NotFoundError

from common.aio import wait_any
from common.config import ClawConfig
from common.log import get_logger
from communication.codec import DecodeError, decode, encode
from communication.connection import NATS_ERRORS, NatsConnection
from communication.startup import StartupCalls
from communication.topology import Topology
from coordinator.lease import CoordinatorLease
from coordinator.standby import active as standby_active
from coordinator.standby import stream
from coordinator.standby.follower import Follower, ResyncNeeded
from coordinator.standby.publisher import ReplicationPublisher
from coordinator.standby.stream import EpochMarker, StandbyStatus
from storage.database import Database

log = get_logger("coordinator.standby")

POLL_S = 0.2
STATUS_EVERY_S = 1.0


async def run_coordinator(config: ClawConfig, stop: asyncio.Event) -> None:
    """Run a coordinator until `stop`: active at once, or standby first when another one is active."""
    from coordinator.service import Coordinator  # the service imports this package's parts

    if not config.coordinator.replication:
        coordinator = await Coordinator.start(config)
        await coordinator.run(stop)
        return
    conn = await NatsConnection.connect(config.nats, name="claw-coordinator")
    try:
        became = await _become_active(conn, config, stop)
    except BaseException:
        await conn.close()
        raise
    if became is None:  # stopped while standing by
        await conn.close()
        return
    lease, publisher = became
    coordinator = await Coordinator.start(config, conn=conn, lease=lease, replication=publisher)
    await coordinator.run(stop)


async def _become_active(
    conn: NatsConnection, config: ClawConfig, stop: asyncio.Event
) -> tuple[CoordinatorLease, ReplicationPublisher | None] | None:
    """The lease, and the publisher when this coordinator continues the stream (its marker appended
    and its database brought to it); None when stopped while standing by."""
    settings = config.coordinator
    topology = Topology(conn, config.jetstream)
    node_id = settings.node_id or f"coordinator-{socket.gethostname()}-{os.getpid()}"
    step = StartupCalls(config.nats.startup_deadline_s)
    await step("the replication stream", lambda: stream.ensure_stream(conn, config.jetstream, settings))

    async def take() -> CoordinatorLease | None:
        return await CoordinatorLease.try_acquire(conn, topology, settings, node_id, now=time.time())

    key = await asyncio.to_thread(stream.replication_key, settings.db_path)
    follower = Follower(conn, config.jetstream, Path(settings.db_path), key=key)
    lease = await step("the coordinator lease", take)
    if lease is None:
        return await Standby(conn, config, node_id, take, follower).run(stop)
    try:
        if not await _behind(conn, config):
            return lease, None  # Coordinator.start marks the epoch as starting from this database
        return lease, await _continue_stream(conn, config, lease, follower, bootstrap=True)
    except BaseException:
        await lease.release()
        raise
    finally:
        await follower.close()


async def _continue_stream(
    conn: NatsConnection, config: ClawConfig, lease: CoordinatorLease, follower: Follower, *, bootstrap: bool
) -> ReplicationPublisher:
    """Append this epoch's marker first (from then on a former active cannot append), then bring the
    database to it: every commit up to the marker (from the newest snapshot on with `bootstrap`, else
    from where the follower is)."""
    started = time.monotonic()
    publisher = await standby_active.publisher_for(conn, config, lease)
    await publisher.begin(stream.CONTINUES)
    if bootstrap:
        await follower.bootstrap(deadline_s=config.nats.startup_deadline_s)
    try:
        commit_no = await follower.catch_up(until_seq=publisher.last_seq)
    except ResyncNeeded as exc:  # a restart that began a new lineage after the snapshot we read
        log.warning("standby.resync", reason=str(exc))
        await follower.bootstrap(newer_than_seq=follower.stream_seq, deadline_s=config.nats.startup_deadline_s)
        commit_no = await follower.catch_up(until_seq=publisher.last_seq)
    publisher.continued_at(commit_no)
    log.info(
        "coordinator.taking_over", node_id=lease.holder.node_id, epoch=lease.revision, commit_no=commit_no,
        catch_up_s=round(time.monotonic() - started, 3),
    )  # fmt: skip
    return publisher


async def _behind(conn: NatsConnection, config: ClawConfig) -> bool:
    """Whether the local database is behind the replication stream (a fresh machine, a former standby)."""
    last = await _last_commit_in_stream(conn)
    if last is None:
        return False  # nothing replicated yet: the local database is the truth
    db_path = Path(config.coordinator.db_path)
    local = 0
    if await asyncio.to_thread(db_path.exists):
        db = await Database.open(db_path, check="off")
        try:
            local = await db.commit_no()
        finally:
            await db.close()
    if local >= last:
        return False  # the stream's end, or commits of ours it never got: our snapshot tells the standbys
    log.warning(
        "coordinator.rebuilding_from_stream", local_commit=local, stream_commit=last, db=str(db_path),
        note="this database is behind the replication stream: rebuilt from the snapshot and the stream",
    )  # fmt: skip
    return True


async def _last_commit_in_stream(conn: NatsConnection) -> int | None:
    """The commit number at the stream's end (a marker's or a commit's), or None when it is empty."""
    info = await conn.js.stream_info(stream.stream_name(conn))
    seq = info.state.last_seq
    while info.state.messages and seq >= max(info.state.first_seq, 1):
        # A takeover's marker continues the stream: the commit before it is the end.
        try:
            msg = await conn.js.get_msg(stream.stream_name(conn), seq)
        except NotFoundError:
            seq -= 1
            continue
        headers = msg.headers or {}
        if headers.get(stream.H_MARKER) != "epoch":
            return int(headers.get(stream.H_COMMIT, "0"))
        try:
            commit_no = decode(msg.data or b"", EpochMarker).commit_no
        except DecodeError:
            commit_no = stream.CONTINUES
        if commit_no != stream.CONTINUES:
            return commit_no
        seq -= 1
    return None


class Standby:
    """Follows the replication stream until the lease is free, then takes it."""

    def __init__(
        self,
        conn: NatsConnection,
        config: ClawConfig,
        node_id: str,
        take: Callable[[], Awaitable[CoordinatorLease | None]],
        follower: Follower,
    ) -> None:
        self._conn = conn
        self._config = config
        self._node_id = node_id
        self._take = take
        self._follower = follower
        self._since = time.time()

    async def run(self, stop: asyncio.Event) -> tuple[CoordinatorLease, ReplicationPublisher] | None:
        """Stand by until the lease is ours (returned with the publisher of the new epoch, the
        database holding every commit before its marker) or `stop` (None)."""
        follower = self._follower
        try:
            await self._bootstrap(0)
            log.info(
                "coordinator.standby", node_id=self._node_id, commit_no=follower.commit_no,
                active=follower.active.node_id if follower.active else None,
                note="another coordinator is active: standing by, applying its commits; "
                "takes over when its lease lapses",
            )  # fmt: skip
            status_due = 0.0
            while not stop.is_set():
                lease = await self._try_take()
                if lease is not None:
                    return await self._take_over(lease)
                if time.monotonic() >= status_due:
                    status_due = time.monotonic() + STATUS_EVERY_S
                    await self._report()
                try:
                    while await follower.step(timeout_s=POLL_S):
                        if stop.is_set():
                            break
                except ResyncNeeded as exc:
                    log.warning("standby.resync", reason=str(exc))
                    await self._bootstrap(follower.stream_seq)
                except NATS_ERRORS as exc:
                    log.warning("standby.follow_failed", error=str(exc) or type(exc).__name__)
                    await wait_any(stop, timeout_s=POLL_S)
            return None
        finally:
            await follower.close()
            await self._withdraw()

    async def _bootstrap(self, newer_than_seq: int) -> None:
        await self._follower.bootstrap(newer_than_seq=newer_than_seq, deadline_s=self._config.nats.startup_deadline_s)

    async def _try_take(self) -> CoordinatorLease | None:
        try:
            return await self._take()
        except NATS_ERRORS as exc:
            log.warning("standby.lease_check_failed", error=str(exc) or type(exc).__name__)
            return None

    async def _take_over(self, lease: CoordinatorLease) -> tuple[CoordinatorLease, ReplicationPublisher]:
        """The new epoch's marker, then every commit before it; the caller starts serving."""
        try:
            return lease, await _continue_stream(self._conn, self._config, lease, self._follower, bootstrap=False)
        except BaseException:
            await lease.release()
            raise

    async def _report(self) -> None:
        follower = self._follower
        try:
            lag = await follower.lag()
            status = StandbyStatus(
                node_id=self._node_id, host=socket.gethostname(), pid=os.getpid(), since=self._since,
                commit_no=follower.commit_no, stream_seq=follower.stream_seq, lag_msgs=lag,
                applied_at=follower.applied_at or None, epoch=follower.epoch, at=time.time(),
            )  # fmt: skip
            kv = await stream.standbys_kv(self._conn, self._config.jetstream)
            await kv.put(stream.standby_key(self._node_id), encode(status))
        except NATS_ERRORS as exc:
            log.warning("standby.report_failed", error=str(exc) or type(exc).__name__)

    async def _withdraw(self) -> None:
        with contextlib.suppress(*NATS_ERRORS, msgspec.DecodeError):
            kv = await stream.standbys_kv(self._conn, self._config.jetstream)
            await kv.delete(stream.standby_key(self._node_id))
