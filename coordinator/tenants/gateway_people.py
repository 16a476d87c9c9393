"""Which tenants the people holding the HTTP gateway's credentials belong to, as the coordinator reads
them from the gateway's keys bucket (`<prefix>_gateway_keys`: API keys under their 16-hex id, signed
tokens' records under `tok.<id>`; gateway/auth.py, gateway/tokens.py).

The coordinator does not take a person's tenant from the gateway alone: a person whose every gateway
credential is a tenant's is a tenant's person, and a gateway request acting for them is held to
that tenant even if the gateway names none (a gateway bug, or a stolen gateway credential). Read at
most every `MAX_AGE_S` (a key made just now may take that long to count; until then the gateway's
own `Claw-Acting-Tenant` holds it).
"""

from __future__ import annotations

import asyncio
import re

import msgspec
from nats.errors import Error as NatsError
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError

from common.clock import Clock
from common.identity import normalise
from common.log import get_logger
from communication.connection import NatsConnection

log = get_logger("coordinator.tenants")

MAX_AGE_S = 2.0
_CREDENTIAL = re.compile(r"^(?:[0-9a-f]{16}|tok\.[0-9a-f]{32})$")


class _Holder(msgspec.Struct, frozen=True):
    """What the coordinator reads of an API key's or a token's record: whose it is, of which tenant."""

    name: str
    tenant: str | None = None


class GatewayPeople:
    """name -> the tenants of that person's gateway credentials (None among them: a key of every tenant)."""

    def __init__(self, conn: NatsConnection, clock: Clock, *, max_age_s: float = MAX_AGE_S) -> None:
        self._conn = conn
        self._clock = clock
        self._max_age_s = max_age_s
        self._tenants: dict[str, frozenset[str | None]] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def tenants_of(self, person: str) -> frozenset[str | None]:
        """The tenants of `person`'s gateway API keys and tokens (empty: they hold none)."""
        await self._refresh()
        return self._tenants.get(normalise(person), frozenset())

    async def _refresh(self) -> None:
        if self._clock.monotonic() - self._read_at < self._max_age_s:
            return
        async with self._lock:
            if self._clock.monotonic() - self._read_at < self._max_age_s:
                return
            try:
                self._tenants = await self._read()
            except (NatsError, msgspec.DecodeError, TimeoutError) as exc:
                # Keep the last good view; the gateway's own Claw-Acting-Tenant still holds the request.
                log.error("tenants.gateway_keys_unreadable", error=f"{type(exc).__name__}: {exc}")
            self._read_at = self._clock.monotonic()

    async def _read(self) -> dict[str, frozenset[str | None]]:
        try:
            kv = await self._conn.js.key_value(self._conn.subjects.gateway_keys_bucket)
            keys = await kv.keys()
        except (BucketNotFoundError, NoKeysError):
            return {}
        found: dict[str, set[str | None]] = {}
        for key in keys:
            if not _CREDENTIAL.match(key):
                continue
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue
            if not entry.value:
                continue
            holder = msgspec.json.decode(entry.value, type=_Holder)
            found.setdefault(normalise(holder.name), set()).add(holder.tenant)
        return {name: frozenset(tenants) for name, tenants in found.items()}
