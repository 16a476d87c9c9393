"""The HTTP credentials of a cluster as its keys bucket holds them, and the one check that turns a
presented credential into the person it stands for.

The bucket (`<prefix>_gateway_keys`) holds two kinds, written only by admins (`claw gateway key
create`, `claw creds create --http`) and the coordinator:

- API keys, `ck_<key id>_<secret>`: the record under the key id (`ApiKeyRecord`) has the key's name,
  roles, tenant and the SHA-256 of its secret (the secret itself is shown once and kept nowhere).
- signed tokens (communication/http_tokens.py): the record under `tok.<jti>` (`TokenRecord`), checked
  with the public key under `http-token-public-key`.

`CredentialChecker.check` is the check both sides run: a gateway for each HTTP request it takes
(gateway/auth.py), and the coordinator again for each request a gateway sends on a person's behalf
with that person's credential (coordinator/acting_proof.py). The person's name, roles and tenant
always come from the verified record. A result is cached for `CACHE_S` at most, keyed by a digest of
the credential (never the credential itself), so a revocation reaches every checker within that.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from common.errors import NotAuthenticatedError
from common.verbs import Role
from communication import http_tokens
from communication.http_tokens import PUBLIC_KEY_ENTRY, PublicKey, TokenRecord

KEY_PREFIX = "ck"
# How long a check's answer is believed without reading the bucket again (bounds a revocation's delay).
CACHE_S = 2.0
# At most this many answers are cached (the oldest goes first): unknown credentials cannot grow it.
MAX_CACHED = 10_000
# Locks that make concurrent first checks of one credential read the bucket once.
LOCK_STRIPES = 64
API_KEY = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{20,128}})$")
KEY_ID = re.compile(r"^[0-9a-f]{16}$")


class ApiKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One API key as the bucket stores it: no secret, only its digest."""

    key_id: str
    name: str
    roles: list[Role]
    secret_sha256: str
    created_at: float
    # A tenant's key sees only that tenant's tasks (gateway/tenancy.py); None: every tenant's.
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class Holder:
    """Who a verified credential stands for, from its record: the name recorded as who acts, the
    roles, the tenant (None: every tenant's), the record's entry, and when a token expires."""

    name: str
    roles: frozenset[Role]
    key_id: str
    tenant: str | None = None
    expires_at: float | None = None


def secret_digest(secret: str) -> str:
    """What an API key's record keeps of its secret."""
    # A plain digest is enough: the secret is 256 random bits, not a password to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


class CredentialChecker:
    """Checks API keys and signed tokens against one cluster's keys bucket (reads only)."""

    def __init__(self, kv: KeyValue, prefix: str, *, cache_s: float = CACHE_S, max_cached: int = MAX_CACHED) -> None:
        self._kv = kv
        self._prefix = prefix
        self._cache_s = cache_s
        self._max_cached = max_cached
        # digest of a credential -> (when checked, its holder or why it was refused)
        self._answers: dict[bytes, tuple[float, Holder | str]] = {}
        self._public: tuple[float, PublicKey | None] | None = None
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]

    async def check(self, credential: str) -> Holder:
        """Who `credential` stands for; `NotAuthenticatedError` saying why not (never echoing it)."""
        digest = hashlib.sha256(credential.encode()).digest()
        answer = self._cached(digest)
        if answer is None:
            # Many requests with one credential arrive together (a client with 200 in flight): one of
            # them reads the bucket, the others wait for its answer. Striped locks: bounded, and a
            # waiter cancelled meanwhile leaves nothing behind.
            async with self._locks[digest[0] % len(self._locks)]:
                answer = self._cached(digest)
                if answer is None:
                    answer = await self._answer(credential)
                    self._remember(digest, answer)
        if isinstance(answer, str):
            raise NotAuthenticatedError(answer)
        if answer.expires_at is not None and answer.expires_at <= time.time():
            raise NotAuthenticatedError("the token has expired; ask for a new one (`claw creds create --http`)")
        return answer

    def _cached(self, digest: bytes) -> Holder | str | None:
        hit = self._answers.get(digest)
        if hit is None or time.monotonic() - hit[0] >= self._cache_s:
            return None
        return hit[1]

    def _remember(self, digest: bytes, answer: Holder | str) -> None:
        self._answers.pop(digest, None)
        while len(self._answers) >= self._max_cached:
            self._answers.pop(next(iter(self._answers)))  # the oldest
        self._answers[digest] = (time.monotonic(), answer)

    async def _answer(self, credential: str) -> Holder | str:
        try:
            return await self._verify(credential)
        except NotAuthenticatedError as exc:
            return str(exc)

    def forget(self) -> None:
        """Drop every cached answer (after a revocation made in this process)."""
        self._answers.clear()
        self._public = None

    async def public_key(self, *, cached: bool = True) -> PublicKey | None:
        """The published public key (cached for a moment), None before any token was issued."""
        now = time.monotonic()
        if cached and self._public is not None and now - self._public[0] < self._cache_s:
            return self._public[1]
        value = await self._read(PUBLIC_KEY_ENTRY)
        public = None if value is None else msgspec.json.decode(value, type=PublicKey)
        self._public = (now, public)
        return public

    async def api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The record of the API key `key_id` as the bucket has it now, None when there is none."""
        value = await self._read(key_id)
        return None if value is None else msgspec.json.decode(value, type=ApiKeyRecord)

    async def token(self, token_id: str) -> TokenRecord | None:
        """The record of the token `token_id` as the bucket has it now, None once revoked."""
        value = await self._read(http_tokens.RECORD_PREFIX + token_id)
        return None if value is None else msgspec.json.decode(value, type=TokenRecord)

    async def _verify(self, credential: str) -> Holder:
        if http_tokens.looks_like_token(credential):
            claims = http_tokens.verify(credential, await self.public_key(), self._prefix)
            token = await self.token(str(claims["jti"]))
            if token is None:
                raise NotAuthenticatedError("the token was revoked (or never issued by this cluster)")
            if not http_tokens.matches(token, claims):
                raise NotAuthenticatedError("the token's claims do not match what was issued")
            return Holder(token.name, frozenset(token.roles), token.key_id, token.tenant, token.expires_at)
        match = API_KEY.match(credential)
        if match is None:
            raise NotAuthenticatedError(
                "that is not an API key (ck_<id>_<secret>) nor a token from `claw creds create --http`"
            )
        key = await self.api_key(match.group(1))
        if key is None or not hmac.compare_digest(key.secret_sha256, secret_digest(match.group(2))):
            raise NotAuthenticatedError("unknown or revoked API key")
        return Holder(key.name, frozenset(key.roles), key.key_id, key.tenant)

    async def _read(self, entry: str) -> bytes | None:
        try:
            found = await self._kv.get(entry)
        except KeyNotFoundError:
            return None
        return found.value or None
