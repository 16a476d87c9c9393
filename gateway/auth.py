"""Who is calling the gateway: API keys, stored hashed in a NATS KV bucket, resolved to a `Principal`.

An API key reads `ck_<key id>_<secret>`. The bucket (`<prefix>_gateway_keys`) holds, under the key
id, the key's name, its roles and the SHA-256 of its secret (the secret itself is shown once, by
`claw gateway key create`, and kept nowhere); a gateway compares digests in constant time. Keys
live in NATS, not in a gateway, so any number of gateways behind a load balancer accept the same
keys and a revocation reaches all of them (each caches a resolved key for `CACHE_S` at most).

`KeyStore.resolve` is the one place that turns a credential into a principal: the trust issue's
signed tokens plug in here, next to API keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from common.errors import InvalidInputError, NotAuthenticatedError
from common.identity import IDENTITY_PATTERN
from common.verbs import Role
from coordinator.tenants.identity import check_tenant_name

KEY_PREFIX = "ck"
SESSION_SECRET_KEY = "session-secret"  # noqa: S105 - the name of the KV entry, not a secret
# How long a resolved key is believed without asking the bucket again (bounds a revocation's delay).
CACHE_S = 2.0
# A key's name is the identity the coordinator records for what its holder does (common/identity.py).
_NAME = IDENTITY_PATTERN
_KEY = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{20,128}})$")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its name (recorded as `by`/`submitter`), its roles, its key id, and
    the tenant whose tasks alone it may see and touch (None: every tenant's; gateway/tenancy.py)."""

    name: str
    roles: frozenset[Role]
    key_id: str
    tenant: str | None = None

    def may(self, role: Role) -> bool:
        """Whether this caller may call a verb that needs `role`: it holds that role, or it is a read
        and it holds any role (the coordinator's rule, coordinator/authorization.py)."""
        return role in self.roles or (role is Role.VIEWER and bool(self.roles))


class ApiKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One API key as the bucket stores it: no secret, only its digest."""

    key_id: str
    name: str
    roles: list[Role]
    secret_sha256: str
    created_at: float
    # A tenant's key sees only that tenant's tasks (gateway/tenancy.py); None: every tenant's.
    tenant: str | None = None

    def principal(self) -> Principal:
        """The caller this key authenticates."""
        return Principal(self.name, frozenset(self.roles), self.key_id, self.tenant)


def parse_roles(text: str) -> list[Role]:
    """`submitter,viewer` -> roles; one clear error naming the valid roles otherwise."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    # A person's roles: `worker` belongs to a worker node's credentials only.
    people = [role.value for role in Role if role != Role.WORKER]
    valid = ", ".join(people)
    if not names:
        raise InvalidInputError(f"give at least one role ({valid})")
    unknown = [name for name in names if name not in people]
    if unknown:
        raise InvalidInputError(f"unknown role(s) {', '.join(unknown)}; the roles are {valid}")
    return sorted({Role(name) for name in names}, key=list(Role).index)


def check_name(name: str) -> str:
    """A key's name: who it stands for, an identity (letters, digits, _ -; at most 64)."""
    if not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"invalid key name {name!r}: use letters, digits, '_' or '-' (at most 64, starting with a letter or "
            "digit); it is recorded as who acts"
        )
    return name


def _digest(secret: str) -> str:
    # A plain digest is enough: the secret is 256 random bits, not a password to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """The API keys of one cluster prefix, in their KV bucket."""

    def __init__(self, kv: KeyValue, *, cache_s: float = CACHE_S) -> None:
        self._kv = kv
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}

    async def create(self, name: str, roles: Iterable[Role], tenant: str | None = None) -> tuple[ApiKeyRecord, str]:
        """A new key for `name` with `roles` (of `tenant`: it sees only that tenant's tasks); returns
        its record and the key text (shown once)."""
        check_name(name)
        if tenant is not None:
            check_tenant_name(tenant)
        if any(record.name == name for record in await self.all_keys()):
            raise InvalidInputError(f"a key named {name!r} exists; revoke it first or choose another name")
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            key_id=key_id,
            name=name,
            roles=list(roles),
            secret_sha256=_digest(secret),
            created_at=time.time(),
            tenant=tenant,
        )
        await self._kv.create(key_id, msgspec.json.encode(record))
        return record, f"{KEY_PREFIX}_{key_id}_{secret}"

    async def all_keys(self) -> list[ApiKeyRecord]:
        """Every key (without secrets), oldest first."""
        records = []
        for key_id in await self._key_ids():
            record = await self._get(key_id)
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda r: r.created_at)

    async def revoke(self, name: str) -> int:
        """Delete the keys named `name`; how many there were."""
        doomed = [record for record in await self.all_keys() if record.name == name]
        for record in doomed:
            await self._kv.delete(record.key_id)
            self._cache.pop(record.key_id, None)
        return len(doomed)

    async def resolve(self, credential: str) -> Principal:
        """The principal an API key stands for; `NotAuthenticatedError` for anything else."""
        match = _KEY.match(credential)
        if match is None:
            raise NotAuthenticatedError("that is not an API key (they read ck_<id>_<secret>)")
        record = await self.by_id(match.group(1))
        if record is None or not hmac.compare_digest(record.secret_sha256, _digest(match.group(2))):
            raise NotAuthenticatedError("unknown or revoked API key")
        return record.principal()

    async def by_id(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id (cached for a moment), None when there is none."""
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        record = await self._get(key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (now, record)
        return record

    async def session_secret(self) -> bytes:
        """The secret that signs dashboard sessions, shared by every gateway of the cluster (made once)."""
        try:
            return bytes((await self._kv.get(SESSION_SECRET_KEY)).value or b"")
        except KeyNotFoundError:
            pass
        fresh = secrets.token_hex(32).encode()
        try:
            await self._kv.create(SESSION_SECRET_KEY, fresh)
            return fresh
        except KeyWrongLastSequenceError:  # another gateway made it first: use theirs
            return bytes((await self._kv.get(SESSION_SECRET_KEY)).value or b"")

    async def _get(self, key_id: str) -> ApiKeyRecord | None:
        try:
            entry = await self._kv.get(key_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return msgspec.json.decode(entry.value, type=ApiKeyRecord)

    async def _key_ids(self) -> list[str]:
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            return []
        return [k for k in keys if k != SESSION_SECRET_KEY]
