"""The coordinator's lease on its prefix: one coordinator writes at a time.

Two coordinators on one prefix share the events consumer, so each folds a part of the events into its
own database and neither has the whole truth (38 of 40 finished tasks stayed `queued` in one). Until
coordinators can stand by for each other, a second one must not start, and one that lost its lease
must stop writing.

The lease is the key `leader` in the KV bucket `<prefix>_coordinator`, whose entries expire
`lease_ttl_s` after their last write (the server's clock alone decides, so clock skew between
machines does not matter). Its value names the holder (node id, host, pid, since when).

- **Acquire**: `create` the key. If it exists, watch its revision: a holder that renews it is alive,
  and this start is refused with `LeaseHeldError` naming it (within about one renewal interval);
  a holder that died stops renewing, its entry expires, and `create` succeeds (within `lease_ttl_s`).
- **Renew** every `lease_renew_interval_s` with a compare-and-set on the revision (`update(last=)`).
  A revision that moved means another coordinator took over: the lease is lost.
- **Fence**: the lease is valid until `lease_ttl_s` after the last renewal was *sent* (the server
  started its countdown later, so this errs on the safe side). The database asks `writable()` before
  every transaction (which waits while a renewal is overdue, and raises once the lease is lost) and
  `check()` on the writer thread just before the commit, so a process frozen (SIGSTOP) past its
  lease's expiry writes nothing when it wakes: its next commit is refused and the coordinator stops.
- **Cut off from NATS**: renewals fail and writes wait. When NATS is back, an expired lease is taken
  again only if nobody wrote to the bucket meanwhile (its stream's last sequence is still our
  revision); otherwise another coordinator held it in between, and this one stops.
- **Release** on a clean stop: a compare-and-set delete, so a restart does not wait.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import time

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from common import __version__
from common.aio import wait_any
from common.config import CoordinatorSettings
from common.errors import ConfigError, LeaseHeldError, LeaseLostError
from common.log import get_logger
from communication.codec import DecodeError, decode, encode
from communication.connection import NATS_ERRORS, NatsConnection
from communication.topology import Topology

log = get_logger("coordinator.lease")

LEASE_KEY = "leader"
POLL_S = 0.1
# Renewals that failed (NATS unreachable) are retried this often, not at the renewal interval.
RETRY_S = 0.5
# A transaction starts only with this much of the lease left: the commit comes well before its end.
COMMIT_MARGIN_S = 1.0


class LeaseHolder(msgspec.Struct, frozen=True, kw_only=True):
    """The value of the lease: who holds it (what a refused coordinator's error names)."""

    node_id: str
    host: str
    pid: int
    since: float
    ttl_s: float
    renew_interval_s: float
    version: str = ""

    def describe(self) -> str:
        """`coordinator-a-12 (host a, pid 12, since 2026-01-02 03:04:05 UTC)`."""
        since = datetime.datetime.fromtimestamp(self.since, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{self.node_id} (host {self.host}, pid {self.pid}, since {since})"


class CoordinatorLease:
    """A held lease, renewed in a task of its own until `release()`; also the database's write fence."""

    def __init__(self, conn: NatsConnection, kv: KeyValue, stream: str, holder: LeaseHolder) -> None:
        if holder.renew_interval_s * 2 > holder.ttl_s:
            raise ConfigError(
                f"coordinator.lease_renew_interval_s ({holder.renew_interval_s:g}) must be at most half of "
                f"coordinator.lease_ttl_s ({holder.ttl_s:g}): a lease must survive a missed renewal"
            )
        self.holder = holder
        self._conn = conn
        self._kv = kv
        self._stream = stream
        self._value = encode(holder)
        self._revision = 0
        self._valid_until = 0.0
        self._lost_reason: str | None = None  # read by `check()` on the database's writer thread
        self.lost = asyncio.Event()
        self._stopping = asyncio.Event()
        # Once the coordinator is stopping, a write waits for an overdue renewal only until then: with
        # NATS gone for good (its server stopped with the cluster) it would wait forever.
        self._wait_until: float | None = None
        self._keeper: asyncio.Task[None] | None = None

    @classmethod
    async def acquire(
        cls, conn: NatsConnection, topology: Topology, settings: CoordinatorSettings, node_id: str, *, now: float
    ) -> CoordinatorLease:
        """Take the lease (waiting up to its TTL for a dead holder's to lapse) and start renewing it.

        Raises `LeaseHeldError` when another coordinator holds it and renews it.
        """
        holder = LeaseHolder(
            node_id=node_id, host=socket.gethostname(), pid=os.getpid(), since=now, ttl_s=settings.lease_ttl_s,
            renew_interval_s=settings.lease_renew_interval_s, version=__version__,
        )  # fmt: skip
        kv, stream = await topology.lease_kv(settings.lease_ttl_s)
        lease = cls(conn, kv, stream, holder)
        await lease._take()
        lease._keeper = asyncio.create_task(lease._keep(), name="coordinator-lease")
        log.info(
            "lease.acquired", revision=lease._revision, ttl_s=holder.ttl_s, bucket=conn.subjects.coordinator_bucket
        )
        return lease

    @classmethod
    async def try_acquire(
        cls, conn: NatsConnection, topology: Topology, settings: CoordinatorSettings, node_id: str, *, now: float
    ) -> CoordinatorLease | None:
        """Take the lease if nobody holds it (one attempt) and start renewing it; None while it is held.

        What a standby calls, again and again, until the active coordinator's lease lapses.
        """
        holder = LeaseHolder(
            node_id=node_id, host=socket.gethostname(), pid=os.getpid(), since=now, ttl_s=settings.lease_ttl_s,
            renew_interval_s=settings.lease_renew_interval_s, version=__version__,
        )  # fmt: skip
        kv, stream = await topology.lease_kv(settings.lease_ttl_s)
        lease = cls(conn, kv, stream, holder)
        sent = time.monotonic()
        try:
            lease._granted(await kv.create(LEASE_KEY, lease._value), sent)
        except KeyWrongLastSequenceError:
            current = await lease._current()
            if current is None or current[1] != holder:
                return None
            lease._granted(current[0], sent)  # our own create, whose answer was lost
        lease._keeper = asyncio.create_task(lease._keep(), name="coordinator-lease")
        log.info(
            "lease.acquired", revision=lease._revision, ttl_s=holder.ttl_s, bucket=conn.subjects.coordinator_bucket
        )
        return lease

    async def holder_now(self) -> LeaseHolder | None:
        """Who holds the lease now (None: nobody, or unreadable)."""
        current = await self._current()
        return None if current is None else current[1]

    @property
    def held(self) -> bool:
        """Whether the lease is still ours (it may be overdue for renewal)."""
        return self._lost_reason is None

    async def writable(self) -> None:
        """Return when a write may start; wait while a renewal is overdue; raise once the lease is lost."""
        while True:
            if self._lost_reason is not None:
                raise LeaseLostError(self._lost_message())
            if time.monotonic() + COMMIT_MARGIN_S < self._valid_until:
                return
            if self._stopping.is_set() or (self._wait_until is not None and time.monotonic() >= self._wait_until):
                raise LeaseLostError("the lease could not be renewed before stopping; nothing more is written")
            await asyncio.sleep(POLL_S)

    def stop_waiting_after(self, seconds: float) -> None:
        """The coordinator is stopping: from `seconds` from now, a write that would wait for an overdue
        renewal fails at once instead (the lease keeps renewing meanwhile, so a stop with NATS healthy
        still commits what it drains)."""
        deadline = time.monotonic() + seconds
        self._wait_until = deadline if self._wait_until is None else min(self._wait_until, deadline)

    def blocked_reason(self) -> str | None:
        """Why a write would have to wait or fail right now (None: it may start), without waiting."""
        if self._lost_reason is not None:
            return self._lost_message()
        if time.monotonic() + COMMIT_MARGIN_S < self._valid_until:
            return None
        return (
            "the coordinator cannot renew its lease, so it writes nothing for now (JetStream does not answer: "
            "a NATS cluster without quorum, or NATS unreachable)"
        )

    def check(self) -> None:
        """Raise unless the lease is valid right now (called just before a commit, on any thread)."""
        if self._lost_reason is not None:
            raise LeaseLostError(self._lost_message())
        if time.monotonic() >= self._valid_until:
            raise LeaseLostError(
                "the coordinator's lease expired before this write could be committed (was the process frozen?)"
            )

    @property
    def revision(self) -> int:
        """The lease's revision in its bucket: the epoch of this coordinator's term (replication)."""
        return self._revision

    def may_keep_trying(self) -> bool:
        """Whether a write already committed may keep retrying its replication: the lease is ours and
        we are not stopping past its end."""
        if self._lost_reason is not None:
            return False
        return not (self._stopping.is_set() and time.monotonic() >= self._valid_until)

    def declare_lost(self, reason: str) -> None:
        """Another coordinator fenced this one (the replication stream refused its commit): stop."""
        if self._lost_reason is None:
            self._lose(reason)

    async def release(self) -> None:
        """Stop renewing; give the lease up if it is still ours, so the next coordinator need not wait."""
        self._stopping.set()
        if self._keeper is not None:
            await self._keeper
            self._keeper = None
        if self._lost_reason is not None:
            return
        self._lost_reason = "released"
        try:
            await self._kv.delete(LEASE_KEY, last=self._revision)
            log.info("lease.released", revision=self._revision)
        except KeyWrongLastSequenceError:
            pass  # no longer ours (it lapsed and another took it): nothing to give up
        except NATS_ERRORS as exc:
            log.warning("lease.release_failed", error=str(exc), lapses_in_s=self.holder.ttl_s)

    # --- acquiring --------------------------------------------------------------------------------

    async def _take(self) -> None:
        """Create the key; while another holds it, tell a live holder (refuse) from a dead one (wait)."""
        ttl_s = self.holder.ttl_s
        deadline = time.monotonic() + ttl_s + self.holder.renew_interval_s + 5.0
        seen: int | None = None
        while True:
            sent = time.monotonic()
            try:
                self._granted(await self._kv.create(LEASE_KEY, self._value), sent)
                return
            except KeyWrongLastSequenceError:
                pass
            current = await self._current()
            if current is not None:  # else it lapsed or was released a moment ago: create again
                revision, other = current
                if other == self.holder:
                    # Our own create from a start-up try whose answer timed out: the lease is ours.
                    self._granted(revision, sent)
                    return
                if seen is not None and revision != seen:
                    raise LeaseHeldError(self._held_message(other))
                if seen is None:
                    seen = revision
                    log.warning(
                        "lease.waiting",
                        holder=other.describe() if other else "unknown",
                        note=f"another coordinator holds this prefix's lease; starting if it lapses within {ttl_s:g} s",
                    )
                if time.monotonic() > deadline:
                    raise LeaseHeldError(self._held_message(other) + f"; its lease has not lapsed in {ttl_s:g} s")
            await asyncio.sleep(POLL_S)

    async def _current(self) -> tuple[int, LeaseHolder | None] | None:
        """The lease's revision and holder (None if unreadable), or None when nobody holds it."""
        try:
            entry = await self._kv.get(LEASE_KEY)
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        try:
            return entry.revision, decode(entry.value, LeaseHolder)
        except DecodeError:
            return entry.revision, None

    def _held_message(self, other: LeaseHolder | None) -> str:
        prefix = self._conn.subjects.prefix
        who = other.describe() if other else "a coordinator this version cannot identify"
        return (
            f"another coordinator is running for prefix '{prefix}': {who}; stop it first, "
            "or give this one a prefix of its own (nats.prefix), or start both with --replicate "
            "(coordinator.replication) to run this one as its standby"
        )

    def _granted(self, revision: int, sent: float) -> None:
        self._revision = revision
        self._valid_until = sent + self.holder.ttl_s

    # --- keeping ----------------------------------------------------------------------------------

    async def _keep(self) -> None:
        """Renew until released or lost (a protocol loop: every failure is logged and retried)."""
        failing = False
        while self._lost_reason is None:
            interval_s = RETRY_S if failing else self.holder.renew_interval_s
            if await wait_any(self._stopping, timeout_s=interval_s):
                return
            try:
                await self._renew()
                if failing:
                    log.info("lease.renewed_again", revision=self._revision)
                failing = False
            except NATS_ERRORS as exc:
                left_s = self._valid_until - time.monotonic()
                if not failing or left_s < COMMIT_MARGIN_S:
                    log.warning(
                        "lease.renew_failed", error=str(exc) or type(exc).__name__, valid_for_s=round(left_s, 1)
                    )
                failing = True
            except Exception as exc:
                # A lease nobody renews must not look held: stop the coordinator, loudly.
                log.exception("lease.keeper_failed")
                self._lose(f"renewing it failed: {type(exc).__name__}: {exc}")

    async def _renew(self) -> None:
        sent = time.monotonic()
        try:
            self._granted(await self._kv.update(LEASE_KEY, self._value, last=self._revision), sent)
        except KeyWrongLastSequenceError:
            await self._reclaim_or_lose(sent)

    async def _reclaim_or_lose(self, sent: float) -> None:
        """The revision moved: taken over, or lapsed while we could not renew (then take it back if
        nobody else wrote to the bucket meanwhile)."""
        current = await self._current()
        if current is not None:
            revision, other = current
            if other == self.holder:
                # Our own renewal, sent while cut off and timed out here, was buffered by the client
                # and stored after the reconnect (docs/JETSTREAM.md): adopt it and renew on it, so
                # the lease's validity counts from a write we know the time of.
                self._granted(await self._kv.update(LEASE_KEY, self._value, last=revision), sent)
                log.info("lease.own_late_renewal_adopted", revision=self._revision)
                return
            self._lose(f"taken over by {other.describe() if other else 'another coordinator'}")
            return
        last_seq = (await self._conn.js.stream_info(self._stream)).state.last_seq
        if last_seq != self._revision:
            self._lose("it lapsed, and another coordinator held it meanwhile")
            return
        try:
            self._granted(await self._kv.create(LEASE_KEY, self._value), sent)
        except KeyWrongLastSequenceError:
            self._lose("it lapsed, and another coordinator took it")
            return
        log.warning("lease.reacquired", revision=self._revision, note="it had lapsed; nobody held it meanwhile")

    def _lose(self, reason: str) -> None:
        self._lost_reason = reason
        self.lost.set()
        log.error(
            "coordinator.lease_lost", reason=reason, node_id=self.holder.node_id, action="stopping without writing"
        )

    def _lost_message(self) -> str:
        prefix = self._conn.subjects.prefix
        return f"this coordinator lost its lease on prefix '{prefix}': {self._lost_reason}; it stops without writing"
