"""Dashboard sessions: a signed cookie naming the API key the person logged in with, and a CSRF token.

Stateless: the cookie holds the key id and a random CSRF token, signed with the cluster's session
secret (kept in the keys bucket, shared by every gateway) and dated, so any gateway checks it and a
revoked key ends its sessions. Forms and the dashboard's fetch calls send the CSRF token back
(`X-CSRF-Token` header or `csrf` form field); a request authenticated by the cookie alone is refused
without it, so another site cannot make a logged-in browser act.
"""

from __future__ import annotations

import hmac
import secrets

import itsdangerous
import msgspec

COOKIE = "claw_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
_SALT = "claw-gateway-session"


class Session(msgspec.Struct, frozen=True, array_like=True):
    """What a session cookie holds."""

    key_id: str
    csrf: str


class SessionSigner:
    """Signs and checks session cookies with the cluster's session secret."""

    def __init__(self, secret: bytes, *, ttl_s: float) -> None:
        self._serializer = itsdangerous.URLSafeTimedSerializer(secret, salt=_SALT)
        self.ttl_s = ttl_s

    def issue(self, key_id: str) -> tuple[str, Session]:
        """A new session for `key_id`: the cookie value and the session."""
        session = Session(key_id, secrets.token_urlsafe(24))
        return self._serializer.dumps(msgspec.json.encode(session).decode()), session

    def read(self, cookie: str | None) -> Session | None:
        """The session in a cookie, None when absent, forged or expired."""
        if not cookie:
            return None
        try:
            text = self._serializer.loads(cookie, max_age=int(self.ttl_s))
            return msgspec.json.decode(text, type=Session)
        except (itsdangerous.BadData, msgspec.DecodeError, TypeError):
            return None


def csrf_matches(session: Session, sent: str | None) -> bool:
    """Whether the CSRF token sent back is the session's."""
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())
