"""A worker's side of flow control: cooldowns it honours, per-call permits it asks for.

The coordinator decides every start (coordinator/flow/); a worker only

- keeps the cooldowns the coordinator broadcasts (`<prefix>.flow.cooldown`), and its own after a 429
  or a dropped connection, and waits them out before starting a task on a cooling key (a task that
  was published before the key cooled down must not hit the API during the cooldown);
- asks for a permit per call when a handler uses `ctx.limit(key, tokens=...)` (verbs
  `permit_acquire` / `permit_release`), giving back the tokens the call really used and how it ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from common import verbs
from common.api import CachePutRequest, PermitAcquireRequest, PermitReleaseRequest
from common.clock import Clock
from common.errors import ClawError
from common.flow import CooldownNotice, FailureReason, cooldown_subject
from common.log import get_logger
from communication.api_client import ClawClient
from communication.connection import NATS_ERRORS, NatsConnection
from communication.response_cache import ResponseCache

log = get_logger("worker.flow")
# A permit request waits this long at the coordinator before it is asked again.
ACQUIRE_WAIT_S = 20.0
# What a cache report may fail with (the coordinator refusing it, or not answering): only a log line.
REPORT_ERRORS: tuple[type[BaseException], ...] = (ClawError, *NATS_ERRORS)


class FlowClient:
    """Cooldowns and per-call permits for one worker."""

    def __init__(
        self,
        conn: NatsConnection,
        node_id: str,
        clock: Clock,
        *,
        cooldown_s: float,
        max_cooldown_s: float = 300.0,
        cache_ttl_s: dict[str, float] | None = None,
    ) -> None:
        self.max_cooldown_s = max_cooldown_s
        # The response cache, and the skills whose answers are cached by default (flow.cache_ttl_s).
        self.cache = ResponseCache(conn, clock)
        self.cache_ttl_s = dict(cache_ttl_s or {})
        self._conn = conn
        self._node_id = node_id
        self._clock = clock
        self.cooldown_s = cooldown_s
        self._client = ClawClient(conn, owns_connection=False)
        self._until: dict[str, float] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Listen to the coordinator's cooldowns."""
        self._sub = await self._conn.nc.subscribe(cooldown_subject(self._conn.subjects.prefix), cb=self._on_notice)

    async def stop(self) -> None:
        """Stop listening."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_notice(self, msg: Msg) -> None:
        try:
            notice = msgspec.json.decode(msg.data, type=CooldownNotice)
        except msgspec.DecodeError:
            log.warning("flow.bad_notice", subject=msg.subject)
            return
        # Anyone on the bus can publish here until the trust work binds the subject to the
        # coordinator: a forged cooldown stops this worker's tasks on the key for max_cooldown_s at most.
        self.cool([notice.key], min(notice.until, self._clock.now() + self.max_cooldown_s))

    def cool(self, keys: Iterable[str], until: float) -> None:
        """No start on `keys` before `until` (this worker's own view)."""
        for key in keys:
            if until > self._until.get(key, 0.0):
                self._until[key] = until

    def cooling_for(self, keys: Iterable[str]) -> float:
        """Seconds until every key in `keys` has cooled down (0: none cools)."""
        now = self._clock.now()
        return max((self._until.get(key, 0.0) - now for key in keys), default=0.0)

    async def wait_cooled(self, keys: list[str]) -> float:
        """Wait until no key in `keys` cools down; returns how long it waited."""
        waited = 0.0
        while (left := self.cooling_for(keys)) > 0:
            await asyncio.sleep(left)
            waited += left
        return waited

    async def acquire(self, key: str, task_id: str, tokens: int) -> str:
        """A permit for one call on `key`, waiting as long as it takes (the task's timeout bounds it)."""
        while True:
            await self.wait_cooled([key])
            request = PermitAcquireRequest(key=key, task_id=task_id, node_id=self._node_id, tokens=tokens,
                                           wait_s=ACQUIRE_WAIT_S)  # fmt: skip
            reply = await self._client.call(verbs.PERMIT_ACQUIRE, request, timeout_s=ACQUIRE_WAIT_S + 10)
            if reply.permit_id is not None:
                return reply.permit_id
            await asyncio.sleep(min(reply.retry_in_s, 1.0))

    async def release(
        self,
        permit_id: str,
        *,
        input_tokens: int,
        output_tokens: int,
        failure: FailureReason | None,
        retry_after_s: float | None,
    ) -> None:
        """Give a permit back with what the call used and how it ended."""
        request = PermitReleaseRequest(
            permit_id=permit_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            failure=None if failure is None else failure.value,
            retry_after_s=retry_after_s,
            node_id=self._node_id,
        )
        await self._client.call(verbs.PERMIT_RELEASE, request)

    async def report_cache(self, task_id: str, attempt: int, model: str, result: object, ttl_s: float) -> None:
        """Ask the coordinator to cache a real call's answer (workers may not write the bucket); a
        refusal or a failure is logged and costs only the next hit."""
        request = CachePutRequest(task_id=task_id, attempt=attempt, model=model, ttl_s=ttl_s,
                                  result=msgspec.Raw(msgspec.json.encode(result)), node_id=self._node_id)  # fmt: skip
        try:
            await self._client.call(verbs.CACHE_PUT, request)
        except REPORT_ERRORS as exc:
            log.warning("flow.cache_put_failed", task_id=task_id, error=str(exc))
