"""Dashboard sessions: a sealed cookie holding the credential the person logged in with, and a CSRF token.

Stateless: the cookie holds the API key or token the person typed at /login and a random CSRF token,
encrypted and authenticated with Fernet (AES-CBC + HMAC-SHA256, dated) under a key derived from the
cluster's session secret, so any gateway of the cluster opens it, and forwards that credential to the
coordinator as the person's proof with each request (coordinator/acting_proof.py), exactly as for a
bearer token. The browser never sees the credential in clear (and the cookie is HttpOnly); a revoked
key or token ends its sessions. Forms and the dashboard's fetch calls send the CSRF token back
(`X-CSRF-Token` header or `csrf` form field); a request authenticated by the cookie alone is refused
without it, so another site cannot make a logged-in browser act.

The session secret lives in its own bucket (`<prefix>_gateway_sessions`), which only gateways and the
coordinator may read or write (the coordinator creates it; the first gateway writes the secret).
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass, field

import msgspec
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from common.config import ClawConfig
from communication.connection import NatsConnection
from communication.topology import Topology

COOKIE = "claw_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
SESSION_SECRET_KEY = "session-secret"  # noqa: S105 - the name of the KV entry, not a secret
_INFO = b"claw-gateway-session"


class _Sealed(msgspec.Struct, frozen=True, array_like=True):
    """What a session cookie holds, before sealing."""

    credential: str
    csrf: str


@dataclass(frozen=True, slots=True)
class Session:
    """An open session: the credential it logged in with (never shown) and its CSRF token."""

    credential: str = field(repr=False)
    csrf: str


class SessionSigner:
    """Seals and opens session cookies with a key derived from the cluster's session secret."""

    def __init__(self, secret: bytes, *, ttl_s: float) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self.ttl_s = ttl_s

    def issue(self, credential: str) -> tuple[str, Session]:
        """A new session for `credential` (already checked): the cookie value and the session."""
        session = Session(credential, secrets.token_urlsafe(24))
        sealed = self._fernet.encrypt(msgspec.json.encode(_Sealed(session.credential, session.csrf)))
        return sealed.decode(), session

    def read(self, cookie: str | None) -> Session | None:
        """The session in a cookie, None when absent, forged, edited or expired."""
        if not cookie:
            return None
        try:
            sealed = msgspec.json.decode(self._fernet.decrypt(cookie.encode(), ttl=int(self.ttl_s)), type=_Sealed)
        except (InvalidToken, msgspec.DecodeError, UnicodeError):
            return None
        return Session(sealed.credential, sealed.csrf)


def csrf_matches(session: Session, sent: str | None) -> bool:
    """Whether the CSRF token sent back is the session's."""
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())


async def open_session_signer(conn: NatsConnection, config: ClawConfig, ttl_s: float) -> SessionSigner:
    """The signer of this cluster's sessions, with the secret every gateway shares (made by the first)."""
    kv = await Topology(conn, config.jetstream).gateway_sessions_kv()
    try:
        secret = (await kv.get(SESSION_SECRET_KEY)).value or b""
    except KeyNotFoundError:
        fresh = secrets.token_hex(32).encode()
        try:
            await kv.create(SESSION_SECRET_KEY, fresh)
            secret = fresh
        except KeyWrongLastSequenceError:  # another gateway made it first: use theirs
            secret = (await kv.get(SESSION_SECRET_KEY)).value or b""
    return SessionSigner(bytes(secret), ttl_s=ttl_s)
