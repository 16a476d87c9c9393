"""Signed bearer tokens for HTTP: issued by `claw creds create NAME --role ... --http`, checked by
every gateway of the cluster and again by the coordinator for each request a gateway sends on a
person's behalf (communication/http_credentials.py).

A token is a JWT (RFC 7519) signed with EdDSA (Ed25519), made and checked by PyJWT. Asymmetric on
purpose: the private signing key stays in the cluster's credentials folder (`<auth dir>/
http-token-signing.pem`, mode 0600, next to the NATS registry) where only `claw creds` reads it;
the public key is published in the keys bucket (`<prefix>_gateway_keys`), which only admins and the
coordinator may write, so a gateway (or whoever steals its NATS credentials) can check tokens but
never mint one, nor publish a key of its own.

The claims: `sub` (the identity, as on NATS), `roles`, `tenant` (absent: every tenant), `iss`
(`claw:<prefix>`: the cluster), `aud` (`claw-gateway`), `iat`, `exp` and `jti` (the token's id).
Each issued token is also recorded in the keys bucket under `tok.<jti>`; a token is accepted only
while its record is there and agrees with the signed claims, so `claw creds revoke NAME` (deleting
the records) is refused by every running gateway and coordinator within
`communication.http_credentials.CACHE_S`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import CredentialsError, InvalidInputError, NotAuthenticatedError
from common.identity import write_private
from common.verbs import Role

ALGORITHM = "EdDSA"
AUDIENCE = "claw-gateway"
SIGNING_KEY_FILE = "http-token-signing.pem"
# The keys bucket's entry holding the public half (a `PublicKey`), and its token records' prefix.
PUBLIC_KEY_ENTRY = "http-token-public-key"
RECORD_PREFIX = "tok."
DEFAULT_TTL_S = 30 * 86400.0
_TTL = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# A JWT: three base64url parts (an API key reads ck_..., without dots).
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class PublicKey(msgspec.Struct, frozen=True, kw_only=True):
    """The public half of the cluster's token signing key, as the keys bucket holds it."""

    kid: str
    pem: str


class TokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One issued token as the keys bucket stores it (never the token itself)."""

    token_id: str
    name: str
    roles: list[Role]
    tenant: str | None = None
    issued_at: float
    expires_at: float
    kid: str

    @property
    def key_id(self) -> str:
        """Its entry in the keys bucket (and what a dashboard session names)."""
        return RECORD_PREFIX + self.token_id


def looks_like_token(credential: str) -> bool:
    """Whether `credential` has a JWT's shape (else it may be an API key)."""
    return bool(_JWT_SHAPE.match(credential))


def parse_ttl(text: str) -> float:
    """`30d`, `12h`, `90m`, `3600s`, `2w` -> seconds; one clear error otherwise."""
    match = _TTL.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise InvalidInputError(f"--ttl {text!r} is not a duration: write a number and a unit, like 30d, 12h or 90m")
    return float(int(match.group(1)) * _UNITS[match.group(2)])


def issuer(prefix: str) -> str:
    """The `iss` of this cluster's tokens."""
    return f"claw:{prefix}"


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key (the JWT header's `kid`)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_of(private: Ed25519PrivateKey) -> PublicKey:
    """The publishable half of `private`."""
    public = private.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return PublicKey(kid=key_id(public), pem=pem.decode())


def signing_key(auth_dir: Path, *, create: bool = True, fresh: bool = False) -> Ed25519PrivateKey:
    """The cluster's token signing key in `auth_dir` (made, 0600, when missing and `create`; replaced
    when `fresh`: a rotation)."""
    if not auth_dir.is_dir():
        raise CredentialsError(
            f"no credentials folder at {auth_dir}: run where `claw up` ran (it keeps .claw/auth), or pass --auth-dir"
        )
    path = auth_dir / SIGNING_KEY_FILE
    if path.exists() and not fresh:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise CredentialsError(f"{path} is not an Ed25519 key; move it away and issue again")
        return loaded
    if not create and not fresh:
        raise CredentialsError(f"no token signing key at {path}: `claw creds create NAME --role ... --http` makes it")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(path, pem.decode())
    return private


def new_record(name: str, roles: list[Role], tenant: str | None, ttl_s: float, kid: str) -> TokenRecord:
    """The record of a token about to be issued."""
    now = time.time()
    return TokenRecord(
        token_id=secrets.token_hex(16),
        name=name,
        roles=roles,
        tenant=tenant,
        issued_at=now,
        expires_at=now + ttl_s,
        kid=kid,
    )


def sign(private: Ed25519PrivateKey, record: TokenRecord, prefix: str) -> str:
    """The token of `record`, signed with the cluster's key."""
    claims: dict[str, Any] = {
        "sub": record.name,
        "roles": [role.value for role in record.roles],
        "iss": issuer(prefix),
        "aud": AUDIENCE,
        "iat": int(record.issued_at),
        "exp": int(record.expires_at),
        "jti": record.token_id,
    }
    if record.tenant is not None:
        claims["tenant"] = record.tenant
    return jwt.encode(claims, private, algorithm=ALGORITHM, headers={"kid": record.kid})


def verify(token: str, public: PublicKey | None, prefix: str) -> dict[str, Any]:
    """The claims of `token` when this cluster's key signed it and it is in force;
    `NotAuthenticatedError` saying why otherwise (alg `none` and every algorithm but EdDSA included)."""
    if public is None:
        raise NotAuthenticatedError("this cluster has issued no HTTP tokens; use an API key, or issue one with --http")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise NotAuthenticatedError("malformed bearer token") from None
    if header.get("alg") != ALGORITHM:
        raise NotAuthenticatedError(f"bearer tokens are signed with {ALGORITHM}; {header.get('alg')!r} is refused")
    if header.get("kid") != public.kid:
        raise NotAuthenticatedError("the token was not signed with this cluster's key (issue a new one)")
    try:
        return jwt.decode(
            token,
            serialization.load_pem_public_key(public.pem.encode()),  # type: ignore[arg-type]
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=issuer(prefix),
            options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise NotAuthenticatedError("the token has expired; ask for a new one (`claw creds create --http`)") from None
    except jwt.InvalidSignatureError:
        raise NotAuthenticatedError("the token's signature does not verify (forged or edited)") from None
    except jwt.InvalidTokenError as exc:
        raise NotAuthenticatedError(f"invalid bearer token: {exc}") from None


def matches(record: TokenRecord, claims: dict[str, Any]) -> bool:
    """Whether the signed claims are the record's (belt and braces: a signed token is the record's)."""
    return (
        claims.get("sub") == record.name
        and sorted(claims.get("roles") or []) == sorted(role.value for role in record.roles)
        and claims.get("tenant") == record.tenant
    )
