"""Who is calling the gateway: API keys, stored hashed in a NATS KV bucket, resolved to a `Principal`.

An API key reads `ck_<key id>_<secret>`. The bucket (`<prefix>_gateway_keys`) holds, under the key
id, the key's name, its roles and the SHA-256 of its secret (the secret itself is shown once, by
`claw gateway key create`, and kept nowhere); a gateway compares digests in constant time. Keys
live in NATS, not in a gateway, so any number of gateways behind a load balancer accept the same
keys and a revocation reaches all of them (each caches a resolved key for `CACHE_S` at most).

`KeyStore.resolve` is the one place that turns a credential into a principal: an API key, or a
signed bearer token issued by `claw creds create --http` (gateway/tokens.py), whose records live in
the same bucket (`tok.<id>`) so its revocation reaches every gateway the same way.
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
from gateway import tokens
from gateway.tokens import PUBLIC_KEY_ENTRY, PublicKey, TokenRecord

KEY_PREFIX = "ck"
SESSION_SECRET_KEY = "session-secret"  # noqa: S105 - the name of the KV entry, not a secret
# How long a resolved key is believed without asking the bucket again (bounds a revocation's delay).
CACHE_S = 2.0
# A key's name is the identity the coordinator records for what its holder does (common/identity.py).
_NAME = IDENTITY_PATTERN
_KEY = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{20,128}})$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


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

    def __init__(self, kv: KeyValue, *, cache_s: float = CACHE_S, prefix: str = "") -> None:
        self._kv = kv
        self._cache_s = cache_s
        self._prefix = prefix
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}
        self._token_cache: dict[str, tuple[float, TokenRecord | None]] = {}
        self._public: tuple[float, PublicKey | None] | None = None

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
        """The principal an API key or a signed token stands for; `NotAuthenticatedError` for anything else."""
        if tokens.looks_like_token(credential):
            return await self._resolve_token(credential)
        match = _KEY.match(credential)
        if match is None:
            raise NotAuthenticatedError(
                "that is not an API key (ck_<id>_<secret>) nor a token from `claw creds create --http`"
            )
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

    async def principal_of(self, key_id: str) -> Principal | None:
        """The principal a dashboard session's key id stands for (an API key's or a token's), None once
        revoked or expired."""
        if key_id.startswith(tokens.RECORD_PREFIX):
            record = await self._token(key_id[len(tokens.RECORD_PREFIX) :])
            if record is None or record.expires_at <= time.time():
                return None
            return Principal(record.name, frozenset(record.roles), record.key_id, record.tenant)
        api_key = await self.by_id(key_id)
        return None if api_key is None else api_key.principal()

    # --- signed tokens (gateway/tokens.py) ------------------------------------------------------

    async def publish_public_key(self, public: PublicKey, *, replace: bool = False) -> None:
        """Publish the key tokens are checked with; a different one already there is an error unless
        `replace` (a rotation: every token signed with the old key stops working)."""
        current = await self.public_key(cached=False)
        if current == public:
            return
        if current is not None and not replace:
            raise InvalidInputError(
                "this cluster's gateways check tokens with another signing key than this credentials folder's; "
                "run `claw creds rotate --http` from the folder that should sign (old tokens stop working)"
            )
        await self._kv.put(PUBLIC_KEY_ENTRY, msgspec.json.encode(public))
        self._public = None

    async def public_key(self, *, cached: bool = True) -> PublicKey | None:
        """The published public key (cached for a moment), None before any token was issued."""
        now = time.monotonic()
        if cached and self._public is not None and now - self._public[0] < self._cache_s:
            return self._public[1]
        try:
            entry = await self._kv.get(PUBLIC_KEY_ENTRY)
            public = msgspec.json.decode(entry.value, type=PublicKey) if entry.value else None
        except KeyNotFoundError:
            public = None
        self._public = (now, public)
        return public

    async def add_token(self, record: TokenRecord) -> None:
        """Record an issued token (it is accepted while its record is here)."""
        await self._kv.create(record.key_id, msgspec.json.encode(record))

    async def all_tokens(self) -> list[TokenRecord]:
        """Every issued, unrevoked token's record, oldest first."""
        records = []
        for key in await self._all_entries():
            if key.startswith(tokens.RECORD_PREFIX):
                record = await self._token(key[len(tokens.RECORD_PREFIX) :], cached=False)
                if record is not None:
                    records.append(record)
        return sorted(records, key=lambda r: r.issued_at)

    async def revoke_tokens(self, name: str | None = None) -> int:
        """Delete the token records of `name` (None: every one, for a key rotation); how many."""
        doomed = [record for record in await self.all_tokens() if name is None or record.name == name]
        for record in doomed:
            await self._kv.delete(record.key_id)
            self._token_cache.pop(record.token_id, None)
        return len(doomed)

    async def _resolve_token(self, credential: str) -> Principal:
        claims = tokens.verify(credential, await self.public_key(), self._prefix)
        record = await self._token(str(claims["jti"]))
        if record is None:
            raise NotAuthenticatedError("the token was revoked (or never issued by this cluster)")
        if not tokens.matches(record, claims):
            raise NotAuthenticatedError("the token's claims do not match what was issued")
        return Principal(record.name, frozenset(record.roles), record.key_id, record.tenant)

    async def _token(self, token_id: str, *, cached: bool = True) -> TokenRecord | None:
        now = time.monotonic()
        hit = self._token_cache.get(token_id)
        if cached and hit is not None and now - hit[0] < self._cache_s:
            return hit[1]
        record: TokenRecord | None = None
        try:
            entry = await self._kv.get(tokens.RECORD_PREFIX + token_id)
            if entry.value:
                record = msgspec.json.decode(entry.value, type=TokenRecord)
        except KeyNotFoundError:
            pass
        if len(self._token_cache) > 10_000:
            self._token_cache.clear()
        self._token_cache[token_id] = (now, record)
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
        # API keys only: the bucket also holds the session secret, the token key and token records.
        return [k for k in await self._all_entries() if _KEY_ID.match(k)]

    async def _all_entries(self) -> list[str]:
        try:
            return list(await self._kv.keys())
        except NoKeysError:
            return []
