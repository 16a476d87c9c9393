"""Flow control's API: `claw limits list|set|delete`, `claw usage`, and handlers' per-call permits.

Limits are kept in SQLite (`flow_limits`) and in the ledger; a change applies to the next start,
cluster-wide, at once (the coordinator is where every start is decided). Limits from the config
(`flow.limits`) are applied at start-up over what was stored.

Per-call permits (`ctx.limit(key, tokens=...)` in a handler that calls an API several times) are
decided here too: `permit_acquire` waits up to `wait_s` for room, FIFO among the handlers waiting on
that key, and ahead of tasks waiting at the gate (a handler already holds a worker slot). A permit
is given back by `permit_release` with the tokens really used; the permits of a node that goes
offline are given back by the `flow-offline-permits` job within the offline-detection window.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from common import verbs
from common.api import (
    CacheClearReply,
    CacheStatsReply,
    Empty,
    LimitsDeleteRequest,
    LimitsListRequest,
    LimitsReply,
    LimitsSetRequest,
    PermitAcquireRequest,
    PermitReleaseRequest,
    PermitReply,
    UsageReply,
    UsageRequest,
)
from common.clock import Clock
from common.errors import InvalidInputError, PermissionDeniedError
from common.event_kinds import EventKind
from common.flow import FailureReason, Limit, check_key
from common.ids import new_id
from common.log import get_logger
from common.states import NodeStatus
from communication.response_cache import ResponseCache
from coordinator.api_routes import serves
from coordinator.flow.gate import FlowGate
from coordinator.flow.ledger import Ledger
from coordinator.flow.usage import HOUR_S, UsageBook
from coordinator.node_registry import NodeRegistry
from storage.flow_store import GROUPS, FlowStore
from storage.records import EventRecord, WriteBatch
from storage.task_writer import TaskWriter

log = get_logger("coordinator.flow")


@dataclass(slots=True)
class CallPermit:
    """A handler's permit for one call."""

    key: str
    task_id: str
    node_id: str
    tokens: int


class FlowDesk:
    """Serves the flow verbs."""

    def __init__(
        self,
        gate: FlowGate,
        ledger: Ledger,
        store: FlowStore,
        usage: UsageBook,
        writer: TaskWriter,
        registry: NodeRegistry,
        clock: Clock,
        config_limits: list[Limit],
        cache: ResponseCache,
    ) -> None:
        self._cache = cache
        self._gate = gate
        self._ledger = ledger
        self._store = store
        self._usage = usage
        self._writer = writer
        self._registry = registry
        self._clock = clock
        self._config_limits = config_limits
        self._loaded = False
        self._load_lock = asyncio.Lock()
        self.permits: dict[str, CallPermit] = {}

    async def load(self) -> None:
        """Stored limits, then the config's over them (stored too, so `limits list` shows them)."""
        if self._loaded:
            return
        async with self._load_lock:
            if self._loaded:
                return
            for limit in await self._store.limits():
                self._ledger.use(limit.key).limit = limit
            now = self._clock.now()
            for limit in self._config_limits:
                self._ledger.use(limit.key).limit = limit
                await self._store.put_limit(limit, now)
            self._loaded = True

    # --- limits --------------------------------------------------------------------------------

    @serves(verbs.LIMITS_LIST)
    async def limits_list(self, request: LimitsListRequest) -> LimitsReply:
        """Every key with a limit or live use."""
        await self.load()
        return self._reply()

    @serves(verbs.LIMITS_SET)
    async def limits_set(self, request: LimitsSetRequest) -> LimitsReply:
        """Set a key's limit (whole), stored and applied to the next start."""
        await self.load()
        limit = request.limit
        check_key(limit.key)
        if limit.requests is None and limit.tokens_per_minute is None and limit.concurrency is None:
            raise InvalidInputError(
                f"limit for {limit.key}: give at least one of --rpm/--rps/--rph, --tpm, --concurrency "
                f"(to remove the limit: claw limits delete {limit.key})"
            )
        now = self._clock.now()
        await self._store.put_limit(limit, now)
        self._ledger.use(limit.key).limit = limit
        await self._audit(EventKind.LIMIT_SET, limit.key, now, {"limit": limit.describe()})
        log.info("flow.limit_set", key=limit.key, limit=limit.describe())
        self._gate.wake()
        return self._reply()

    @serves(verbs.LIMITS_DELETE)
    async def limits_delete(self, request: LimitsDeleteRequest) -> LimitsReply:
        """Remove a key's limit (its cooldown and breaker stay as they are)."""
        await self.load()
        use = self._ledger.keys.get(request.key)
        if use is None or use.limit is None:
            raise InvalidInputError(f"no limit is set for {request.key!r}; `claw limits list` shows the keys")
        use.limit = None
        now = self._clock.now()
        await self._store.delete_limit(request.key)
        await self._audit(EventKind.LIMIT_DELETED, request.key, now, None)
        self._gate.wake()
        return self._reply()

    def _reply(self) -> LimitsReply:
        now = self._clock.now()
        views = []
        for key in sorted(self._ledger.keys):
            use = self._ledger.keys[key]
            waiting = self._gate.waiting_on(key)
            if use.idle and not waiting:
                continue
            views.append(use.view(now, waiting))
        return LimitsReply(limits=views)

    async def _audit(self, kind: EventKind, key: str, at: float, data: dict[str, object] | None) -> None:
        await self._writer.write_batch(WriteBatch(events=[EventRecord.of(kind, f"limit:{key}", at, data=data)]))

    # --- per-call permits ----------------------------------------------------------------------

    @serves(verbs.PERMIT_ACQUIRE)
    async def permit_acquire(self, request: PermitAcquireRequest) -> PermitReply:
        """A permit for one call on `key`, once it has room (waits up to `wait_s`)."""
        await self.load()
        key = check_key(request.key)
        node = self._registry.get(request.node_id)
        if node is None or node.status == NodeStatus.OFFLINE:
            # Only a live node may hold a permit: one that never beats would never give it back.
            raise InvalidInputError(f"permit for {key}: node {request.node_id!r} is not an online worker")
        use = self._ledger.use(key)
        deadline = time.monotonic() + request.wait_s
        use.callers_waiting += 1
        try:
            while True:
                now = self._clock.now()
                why = use.room(now, request.tokens)
                if why is None:
                    permit_id = new_id()
                    use.charge(permit_id, now, request.tokens, started=True)
                    self.permits[permit_id] = CallPermit(key, request.task_id, request.node_id, request.tokens)
                    return PermitReply(permit_id=permit_id)
                left = deadline - time.monotonic()
                if left <= 0:
                    return PermitReply(retry_in_s=round(use.next_room_in(now), 3), reason=why)
                await asyncio.sleep(min(left, self._gate.settings.gate_interval_s))
        finally:
            use.callers_waiting -= 1

    @serves(verbs.PERMIT_RELEASE)
    async def permit_release(self, request: PermitReleaseRequest) -> PermitReply:
        """Give a call's permit back, with what it used and how it ended."""
        permit = self.permits.get(request.permit_id)
        if permit is None:
            return PermitReply(reason="unknown permit (released already, or its node was declared offline)")
        if request.node_id and permit.node_id != request.node_id:
            # Another node's permit: giving it back would let it, or its usage, be forged.
            log.warning("security.permit_refused", permit_id=request.permit_id, node_id=request.node_id,
                        holder=permit.node_id)  # fmt: skip
            raise PermissionDeniedError(f"permit {request.permit_id} was given to another node than {request.node_id}")
        del self.permits[request.permit_id]
        use = self._ledger.use(permit.key)
        use.release(request.permit_id)
        used = request.input_tokens + request.output_tokens
        if used:
            use.reconcile(request.permit_id, used)
        now = self._clock.now()
        if request.failure is None:
            use.succeeded()
        else:
            try:
                reason = FailureReason(request.failure)
            except ValueError:
                reason = FailureReason.OTHER
            self._gate.failure([permit.key], reason, now, retry_after_s=request.retry_after_s)
        self._gate.wake()
        return PermitReply(permit_id=request.permit_id)

    async def release_offline(self) -> None:
        """Give back the permits of nodes that went offline (a periodic job)."""
        if not self.permits:
            return
        online = {v.node_id for v in self._registry.views() if v.status != NodeStatus.OFFLINE}
        for permit_id, permit in list(self.permits.items()):
            if permit.node_id not in online:
                del self.permits[permit_id]
                self._ledger.use(permit.key).release(permit_id)
                log.warning("flow.permit_reclaimed", key=permit.key, node_id=permit.node_id, task_id=permit.task_id)

    # --- the response cache --------------------------------------------------------------------

    @serves(verbs.CACHE_STATS)
    async def cache_stats(self, request: Empty) -> CacheStatsReply:
        """The cache bucket's entries and bytes, and the hits usage counted in the last 24 h."""
        entries, size = await self._cache.stats()
        await self._usage.flush()
        since = self._clock.now() - 86400.0
        rows = await self._store.usage(int(since // HOUR_S), [])
        hits = sum(r.cache_hits for r in rows)
        return CacheStatsReply(bucket=self._cache.bucket, entries=entries, bytes=size, hits_24h=hits)

    @serves(verbs.CACHE_CLEAR)
    async def cache_clear(self, request: Empty) -> CacheClearReply:
        """Drop every cached answer."""
        cleared = await self._cache.clear()
        log.info("flow.cache_cleared", entries=cleared)
        return CacheClearReply(cleared=cleared)

    # --- usage ---------------------------------------------------------------------------------

    @serves(verbs.USAGE)
    async def usage(self, request: UsageRequest) -> UsageReply:
        """Usage since `since_s` ago, grouped by the fields in `by`."""
        unknown = [b for b in request.by if b not in GROUPS]
        if unknown:
            raise InvalidInputError(f"usage --by {','.join(unknown)}: group by any of {', '.join(GROUPS)}")
        await self._usage.flush()
        since = self._clock.now() - request.since_s
        rows = await self._store.usage(int(since // HOUR_S), request.by)
        return UsageReply(rows=rows, since=since)
