"""The signed HTTP tokens of communication/http_tokens.py, without a server: `--ttl` parsing, a sign/verify round
trip, and each refusal `verify` owes (expired, another cluster, another audience, alg `none`, an HMAC
token keyed with the public key, an edited payload, another key), the signing key file (0600,
reloaded, replaced on rotation), `matches` and telling a token from an API key. Each test asserts the
refusal's own message, so it fails if the check it names is removed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from common.errors import CredentialsError, InvalidInputError, NotAuthenticatedError
from common.verbs import Role
from communication import http_tokens as tokens

PREFIX = "claw"


@pytest.fixture
def private() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def public(private: Ed25519PrivateKey) -> tokens.PublicKey:
    return tokens.public_key_of(private)


def _record(public: tokens.PublicKey, *, ttl_s: float = 3600.0, tenant: str | None = "acme") -> tokens.TokenRecord:
    return tokens.new_record("alice", [Role.SUBMITTER, Role.VIEWER], tenant, ttl_s, public.kid)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _refused(token: str, public: tokens.PublicKey | None, why: str, prefix: str = PREFIX) -> None:
    with pytest.raises(NotAuthenticatedError) as refused:
        tokens.verify(token, public, prefix)
    assert why in str(refused.value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("45s", 45.0), ("90m", 5400.0), ("12h", 43200.0), ("30d", 2592000.0), ("2w", 1209600.0),
                          (" 1h ", 3600.0)],
)  # fmt: skip
def test_parse_ttl_reads_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert tokens.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["0d", "0s", "00h"])
def test_parse_ttl_refuses_zero(text: str) -> None:
    with pytest.raises(InvalidInputError, match="is not a duration"):
        tokens.parse_ttl(text)


@pytest.mark.parametrize("text", ["", "30", "d", "1.5h", "-1d", "30x", "30 d", "30dd", "forever", "1h30m"])
def test_parse_ttl_refuses_junk_with_one_clear_message(text: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        tokens.parse_ttl(text)
    assert str(refused.value) == f"--ttl {text!r} is not a duration: write a number and a unit, like 30d, 12h or 90m"


def test_a_signed_token_verifies_with_the_record_claims(private: Ed25519PrivateKey, public: tokens.PublicKey) -> None:
    record = _record(public)
    token = tokens.sign(private, record, PREFIX)
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "typ": "JWT", "kid": public.kid}
    claims = tokens.verify(token, public, PREFIX)
    assert claims["sub"] == "alice" and claims["roles"] == ["submitter", "viewer"] and claims["tenant"] == "acme"
    assert claims["iss"] == "claw:claw" and claims["aud"] == "claw-gateway" and claims["jti"] == record.token_id
    assert claims["exp"] == int(record.expires_at) and claims["iat"] == int(record.issued_at)
    assert tokens.matches(record, claims)
    assert record.key_id == "tok." + record.token_id and len(record.token_id) == 32
    # A token of every tenant carries no tenant claim at all.
    everywhere = tokens.verify(tokens.sign(private, _record(public, tenant=None), PREFIX), public, PREFIX)
    assert "tenant" not in everywhere


def test_an_expired_token_is_refused(private: Ed25519PrivateKey, public: tokens.PublicKey) -> None:
    token = tokens.sign(private, _record(public, ttl_s=-5.0), PREFIX)
    _refused(token, public, "the token has expired")


def test_a_token_of_another_cluster_prefix_is_refused(private: Ed25519PrivateKey, public: tokens.PublicKey) -> None:
    """Two clusters sharing a signing key still do not accept each other's tokens: `iss` names the prefix."""
    token = tokens.sign(private, _record(public), "other")
    _refused(token, public, "Invalid issuer")
    assert tokens.verify(token, public, "other")["iss"] == "claw:other"


def test_a_token_for_another_audience_is_refused(private: Ed25519PrivateKey, public: tokens.PublicKey) -> None:
    record = _record(public)
    claims = {"sub": "alice", "roles": ["admin"], "iss": tokens.issuer(PREFIX), "aud": "another-service",
              "iat": int(time.time()), "exp": int(time.time()) + 600, "jti": record.token_id}  # fmt: skip
    token = jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": public.kid})
    _refused(token, public, "Audience doesn't match")


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "jti", "iss", "aud"])
def test_a_token_missing_a_required_claim_is_refused(
    private: Ed25519PrivateKey, public: tokens.PublicKey, missing: str
) -> None:
    claims = {"sub": "alice", "roles": ["admin"], "iss": tokens.issuer(PREFIX), "aud": tokens.AUDIENCE,
              "iat": int(time.time()), "exp": int(time.time()) + 600, "jti": "j1"}  # fmt: skip
    del claims[missing]
    token = jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": public.kid})
    _refused(token, public, f'Token is missing the "{missing}" claim')


def test_alg_none_is_refused(private: Ed25519PrivateKey, public: tokens.PublicKey) -> None:
    signed = tokens.sign(private, _record(public), PREFIX)
    payload = signed.split(".")[1]
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': public.kid})}.{payload}."
    assert tokens.looks_like_token(unsigned)
    _refused(unsigned, public, "bearer tokens are signed with EdDSA; 'none' is refused")


def test_an_hmac_token_keyed_with_the_public_key_is_refused(
    private: Ed25519PrivateKey, public: tokens.PublicKey
) -> None:
    """The classic algorithm confusion: HS256 with the (published) public key's PEM as the secret."""
    payload = tokens.sign(private, _record(public), PREFIX).split(".")[1]
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': public.kid})}.{payload}"
    mac = hmac.new(public.pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    _refused(forged, public, "bearer tokens are signed with EdDSA; 'HS256' is refused")


def test_an_edited_payload_is_refused(private: Ed25519PrivateKey, public: tokens.PublicKey) -> None:
    header, payload, signature = tokens.sign(private, _record(public), PREFIX).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    edited = ".".join([header, _b64({**claims, "roles": ["admin"]}), signature])
    _refused(edited, public, "the token's signature does not verify")


def test_a_token_of_another_key_is_refused(private: Ed25519PrivateKey, public: tokens.PublicKey) -> None:
    other = Ed25519PrivateKey.generate()
    other_public = tokens.public_key_of(other)
    assert other_public.kid != public.kid
    # Its own kid: refused before the signature is even checked.
    _refused(tokens.sign(other, _record(other_public), PREFIX), public, "was not signed with this cluster's key")
    # This cluster's kid on another key's signature: the signature does not verify.
    _refused(tokens.sign(other, _record(public), PREFIX), public, "the token's signature does not verify")


def test_no_published_key_and_a_malformed_token_are_refused(
    private: Ed25519PrivateKey, public: tokens.PublicKey
) -> None:
    _refused(tokens.sign(private, _record(public), PREFIX), None, "this cluster has issued no HTTP tokens")
    _refused("not.a-token", public, "malformed bearer token")


def test_the_signing_key_file_is_made_0600_reloaded_and_replaced_on_rotation(tmp_path: Path) -> None:
    path = tmp_path / tokens.SIGNING_KEY_FILE
    first = tokens.signing_key(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    kid = tokens.public_key_of(first).kid
    assert len(kid) == 16 and int(kid, 16) >= 0
    assert tokens.public_key_of(tokens.signing_key(tmp_path)).kid == kid  # read back, not made anew
    assert tokens.public_key_of(tokens.signing_key(tmp_path, create=False)).kid == kid
    rotated = tokens.signing_key(tmp_path, fresh=True)
    assert tokens.public_key_of(rotated).kid != kid
    assert path.stat().st_mode & 0o777 == 0o600
    assert tokens.public_key_of(tokens.signing_key(tmp_path)).kid == tokens.public_key_of(rotated).kid


def test_the_signing_key_is_not_made_when_asked_not_to_nor_outside_a_credentials_folder(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="no token signing key at"):
        tokens.signing_key(tmp_path, create=False)
    assert not (tmp_path / tokens.SIGNING_KEY_FILE).exists()
    with pytest.raises(CredentialsError, match="no credentials folder at"):
        tokens.signing_key(tmp_path / "missing")


def test_a_signing_key_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    other = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / tokens.SIGNING_KEY_FILE).write_bytes(other)
    with pytest.raises(CredentialsError, match="is not an Ed25519 key"):
        tokens.signing_key(tmp_path)


def test_matches_refuses_claims_that_differ_from_the_record(
    private: Ed25519PrivateKey, public: tokens.PublicKey
) -> None:
    record = _record(public)
    claims = tokens.verify(tokens.sign(private, record, PREFIX), public, PREFIX)
    assert tokens.matches(record, {**claims, "roles": list(reversed(claims["roles"]))})  # order is no matter
    assert not tokens.matches(record, {**claims, "sub": "mallory"})
    assert not tokens.matches(record, {**claims, "roles": ["submitter", "viewer", "admin"]})
    assert not tokens.matches(record, {**claims, "roles": ["submitter"]})
    assert not tokens.matches(record, {**claims, "tenant": "globex"})
    assert not tokens.matches(record, {k: v for k, v in claims.items() if k != "tenant"})


def test_a_token_looks_like_a_token_and_an_api_key_does_not(
    private: Ed25519PrivateKey, public: tokens.PublicKey
) -> None:
    assert tokens.looks_like_token(tokens.sign(private, _record(public), PREFIX))
    for _ in range(50):  # API keys as `KeyStore.create` makes them: ck_<hex id>_<urlsafe secret>
        assert not tokens.looks_like_token(f"ck_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}")
    assert not tokens.looks_like_token("a.b")
    assert not tokens.looks_like_token("a.b.c.d")
    assert not tokens.looks_like_token("a b.c.d")
