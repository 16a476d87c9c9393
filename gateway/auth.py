"""Who is calling the gateway: API keys and signed tokens, resolved to a `Principal`, and the admin's
edits of the keys bucket.

An API key reads `ck_<key id>_<secret>`. The bucket (`<prefix>_gateway_keys`) holds, under the key
id, the key's name, its roles and the SHA-256 of its secret (the secret itself is shown once, by
`claw gateway key create`, and kept nowhere); signed tokens issued by `claw creds create --http`
(communication/http_tokens.py) have their records in the same bucket (`tok.<id>`). Keys live in
NATS, not in a gateway, so any number of gateways behind a load balancer accept the same keys and a
revocation reaches all of them (each caches an answer for `CACHE_S` at most).

`KeyStore.resolve` is the one place that turns a credential into a principal, with the check the
coordinator also runs (communication/http_credentials.py). The principal keeps the credential it was
proven with: the gateway forwards it with each request it sends for that person, and the coordinator
checks it again (coordinator/acting_proof.py). A gateway may only read the bucket; the writes here
(`create`, `revoke`, `publish_public_key`, `add_token`, `revoke_tokens`) are an admin's (`claw gateway
key ...`, `claw creds ... --http`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from common.errors import InvalidInputError
from common.identity import IDENTITY_PATTERN
from common.verbs import Role, roles_allow
from communication import http_tokens
from communication.http_credentials import (
    CACHE_S,
    KEY_ID,
    KEY_PREFIX,
    ApiKeyRecord,
    CredentialChecker,
    secret_digest,
)
from communication.http_tokens import PUBLIC_KEY_ENTRY, PublicKey, TokenRecord
from coordinator.tenants.identity import check_tenant_name

# A key's name is the identity the coordinator records for what its holder does (common/identity.py).
_NAME = IDENTITY_PATTERN


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its name (recorded as `by`/`submitter`), its roles, its key id, the
    tenant whose tasks alone it may see and touch (None: every tenant's; gateway/tenancy.py), and the
    credential it presented (forwarded to the coordinator as the proof; never shown or logged)."""

    name: str
    roles: frozenset[Role]
    key_id: str
    tenant: str | None = None
    credential: str = field(default="", repr=False, compare=False)

    def may(self, role: Role) -> bool:
        """Whether this caller may call a verb that needs `role`: it holds that role, or it is a read
        and it holds any role (the coordinator's rule, coordinator/authorization.py)."""
        return roles_allow(self.roles, role)


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


class KeyStore:
    """The API keys and token records of one cluster prefix, in their KV bucket."""

    def __init__(self, kv: KeyValue, *, cache_s: float = CACHE_S, prefix: str = "") -> None:
        self._kv = kv
        # The same check the coordinator runs on what a gateway forwards (coordinator/acting_proof.py).
        self._checker = CredentialChecker(kv, prefix, cache_s=cache_s)

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
            secret_sha256=secret_digest(secret),
            created_at=time.time(),
            tenant=tenant,
        )
        await self._kv.create(key_id, msgspec.json.encode(record))
        return record, f"{KEY_PREFIX}_{key_id}_{secret}"

    async def all_keys(self) -> list[ApiKeyRecord]:
        """Every key (without secrets), oldest first."""
        records = []
        for key_id in await self._key_ids():
            record = await self._checker.api_key(key_id)
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda r: r.created_at)

    async def revoke(self, name: str) -> int:
        """Delete the keys named `name`; how many there were."""
        doomed = [record for record in await self.all_keys() if record.name == name]
        for record in doomed:
            await self._kv.delete(record.key_id)
        self._checker.forget()
        return len(doomed)

    async def resolve(self, credential: str) -> Principal:
        """The principal an API key or a signed token stands for; `NotAuthenticatedError` for anything else."""
        holder = await self._checker.check(credential)
        return Principal(holder.name, holder.roles, holder.key_id, holder.tenant, credential)

    # --- signed tokens (communication/http_tokens.py) -------------------------------------------

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
        self._checker.forget()

    async def public_key(self, *, cached: bool = True) -> PublicKey | None:
        """The published public key (cached for a moment), None before any token was issued."""
        return await self._checker.public_key(cached=cached)

    async def add_token(self, record: TokenRecord) -> None:
        """Record an issued token (it is accepted while its record is here)."""
        await self._kv.create(record.key_id, msgspec.json.encode(record))

    async def all_tokens(self) -> list[TokenRecord]:
        """Every issued, unrevoked token's record, oldest first."""
        records = []
        for key in await self._all_entries():
            if key.startswith(http_tokens.RECORD_PREFIX):
                record = await self._checker.token(key[len(http_tokens.RECORD_PREFIX) :])
                if record is not None:
                    records.append(record)
        return sorted(records, key=lambda r: r.issued_at)

    async def revoke_tokens(self, name: str | None = None) -> int:
        """Delete the token records of `name` (None: every one, for a key rotation); how many."""
        doomed = [record for record in await self.all_tokens() if name is None or record.name == name]
        for record in doomed:
            await self._kv.delete(record.key_id)
        self._checker.forget()
        return len(doomed)

    async def _key_ids(self) -> list[str]:
        # API keys only: the bucket also holds the token key and token records.
        return [k for k in await self._all_entries() if KEY_ID.match(k)]

    async def _all_entries(self) -> list[str]:
        try:
            return list(await self._kv.keys())
        except NoKeysError:
            return []
