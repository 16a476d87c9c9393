"""The one credential check the gateway and the coordinator share (communication/http_credentials.py),
against a real keys bucket on a real nats-server: an API key and a token verify to their records, a
revocation is seen once the cache's moment has passed, an expired token is refused even from the
cache, the cache holds digests (never a credential) and stays bounded, 200 checks at once read the
bucket once; and the dashboard's sealed session cookie (gateway/sessions.py) keeps the credential
out of sight and refuses an edit."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.kv import KeyValue

from common.config import ClawConfig
from common.errors import NotAuthenticatedError
from common.verbs import Role
from communication import http_tokens
from communication.connection import NatsConnection
from communication.http_credentials import CredentialChecker
from communication.topology import Topology
from gateway.auth import KeyStore
from gateway.sessions import SessionSigner
from tests.helpers import eventually


@pytest.fixture
async def kv(config: ClawConfig) -> AsyncIterator[KeyValue]:
    """The keys bucket (created here as the coordinator would: the bus is open)."""
    conn = await NatsConnection.connect(config.nats, name="test-credentials")
    try:
        yield await Topology(conn, config.jetstream).gateway_keys_kv()
    finally:
        await conn.close()


@pytest.fixture
def store(kv: KeyValue, config: ClawConfig) -> KeyStore:
    """What an admin writes with."""
    return KeyStore(kv, prefix=config.nats.prefix)


async def _token(store: KeyStore, prefix: str, name: str, ttl_s: float) -> str:
    private = Ed25519PrivateKey.generate()
    public = http_tokens.public_key_of(private)
    await store.publish_public_key(public, replace=True)
    record = http_tokens.new_record(name, [Role.VIEWER], "acme", ttl_s, public.kid)
    await store.add_token(record)
    return http_tokens.sign(private, record, prefix)


async def test_keys_and_tokens_verify_to_their_records_and_a_revocation_is_seen_after_the_cache(
    store: KeyStore, kv: KeyValue, config: ClawConfig
) -> None:
    record, key = await store.create("ann", [Role.APPROVER], "acme")
    token = await _token(store, config.nats.prefix, "tom", 3600)
    checker = CredentialChecker(kv, config.nats.prefix, cache_s=0.5)
    held = await checker.check(key)
    assert (held.name, held.roles, held.tenant) == ("ann", frozenset({Role.APPROVER}), "acme")
    assert held.key_id == record.key_id
    assert (await checker.check(token)).name == "tom"
    with pytest.raises(NotAuthenticatedError, match="unknown or revoked API key"):
        await checker.check(key[:-4] + "AAAA")
    # The cache keeps digests of what was checked, never a credential.
    assert hashlib.sha256(key.encode()).digest() in checker._answers
    assert not any(key in repr(entry) or token in repr(entry) for entry in checker._answers.items())
    await store.revoke("ann")
    await store.revoke_tokens("tom")

    async def refused(credential: str) -> bool:
        try:
            await checker.check(credential)
        except NotAuthenticatedError:
            return True
        return False

    started = time.monotonic()
    await eventually(lambda: refused(key), timeout_s=5, interval_s=0.05, what="the revoked key refused")
    await eventually(lambda: refused(token), timeout_s=5, interval_s=0.05, what="the revoked token refused")
    assert time.monotonic() - started < 2


async def test_an_expired_token_is_refused_even_from_the_cache(
    store: KeyStore, kv: KeyValue, config: ClawConfig
) -> None:
    token = await _token(store, config.nats.prefix, "brief", 2)
    checker = CredentialChecker(kv, config.nats.prefix, cache_s=3600)
    assert (await checker.check(token)).name == "brief"

    async def expired() -> bool:
        try:
            await checker.check(token)
        except NotAuthenticatedError as exc:
            return "expired" in str(exc)
        return False

    await eventually(expired, timeout_s=10, interval_s=0.1, what="the cached token refused once expired")


async def test_the_cache_stays_bounded(kv: KeyValue, config: ClawConfig) -> None:
    checker = CredentialChecker(kv, config.nats.prefix, max_cached=8)
    for n in range(50):
        with pytest.raises(NotAuthenticatedError):
            await checker.check(f"ck_{n:016x}_{'A' * 43}")
    assert len(checker._answers) == 8


class _CountingReads:
    """The real bucket, counting the entries read (to see how often a check reads it)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self.reads = 0

    async def get(self, key: str) -> Any:
        self.reads += 1
        return await self._kv.get(key)


async def test_concurrent_checks_of_one_credential_read_the_bucket_once(
    store: KeyStore, kv: KeyValue, config: ClawConfig
) -> None:
    _, key = await store.create("crowd", [Role.SUBMITTER])
    counting = _CountingReads(kv)
    checker = CredentialChecker(counting, config.nats.prefix)  # type: ignore[arg-type]
    holders = await asyncio.gather(*(checker.check(key) for _ in range(200)))
    assert {holder.name for holder in holders} == {"crowd"}
    assert counting.reads == 1


def test_a_session_cookie_hides_its_credential_and_refuses_edits_and_other_secrets() -> None:
    signer = SessionSigner(b"s" * 64, ttl_s=3600)
    credential = "ck_0123456789abcdef_" + "k" * 43
    cookie, session = signer.issue(credential)
    assert credential not in cookie and "k" * 43 not in cookie
    opened = signer.read(cookie)
    assert opened is not None and opened.credential == credential and opened.csrf == session.csrf
    assert credential not in repr(opened)
    middle = len(cookie) // 2
    edited = cookie[:middle] + ("A" if cookie[middle] != "A" else "B") + cookie[middle + 1 :]
    assert signer.read(edited) is None
    assert SessionSigner(b"t" * 64, ttl_s=3600).read(cookie) is None
    assert signer.read("") is None and signer.read("not a cookie") is None
