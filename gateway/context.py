"""What every request handler of the gateway shares: verb calls, keys, sessions, the artifact store.

`Gateway.authenticate(request)` is the only way a handler learns who calls: an API key
(`Authorization: Bearer ck_...` or `X-API-Key`) or a signed token from `claw creds create --http`
(`Authorization: Bearer <token>`), else the dashboard's session cookie (which holds, sealed, the
credential the person logged in with: gateway/sessions.py), which also needs the CSRF token on
anything but a read. Either way the principal carries the credential, the proof the gateway forwards.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from common.config import ArtifactSettings
from common.errors import NotAuthenticatedError, PermissionDeniedError
from gateway.auth import KeyStore, Principal
from gateway.calls import GatewayCalls
from gateway.sessions import COOKIE, CSRF_HEADER, Session, SessionSigner, csrf_matches
from gateway.settings import GatewaySettings
from storage.artifacts import ArtifactStore, open_artifact_store

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NO_CREDENTIAL = (
    "no credential: send 'Authorization: Bearer <API key or token>' (`claw gateway key create`, "
    "`claw creds create NAME --role ROLE --http`), or log in at /login"
)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request's principal, and its dashboard session when it came with the cookie."""

    principal: Principal
    session: Session | None = None


class Gateway:
    """The shared parts of one gateway process."""

    def __init__(
        self,
        calls: GatewayCalls,
        keys: KeyStore,
        signer: SessionSigner,
        settings: GatewaySettings,
        artifacts: ArtifactSettings,
    ) -> None:
        self.calls, self.keys, self.signer, self.settings = calls, keys, signer, settings
        self._artifact_settings = artifacts
        self._artifacts: ArtifactStore | None = None
        self._artifacts_lock = asyncio.Lock()

    async def authenticate(self, conn: HTTPConnection, *, csrf: str | None = None) -> Caller:
        """Who sent `conn`; `csrf` is the token a form sent (headers are read here)."""
        credential = _bearer(conn)
        if credential is not None:
            return Caller(await self.keys.resolve(credential))
        session = self.signer.read(conn.cookies.get(COOKIE))
        if session is None:
            raise NotAuthenticatedError(NO_CREDENTIAL)
        try:
            principal = await self.keys.resolve(session.credential)
        except NotAuthenticatedError:
            raise NotAuthenticatedError(
                "the key or token this session logged in with was revoked or expired; log in again at /login"
            ) from None
        unsafe = conn.scope["type"] == "http" and conn.scope["method"] not in SAFE_METHODS
        if unsafe and not csrf_matches(session, csrf or conn.headers.get(CSRF_HEADER)):
            raise PermissionDeniedError("missing or wrong CSRF token; reload the page and try again")
        return Caller(principal, session)

    async def artifact_store(self) -> ArtifactStore:
        """The cluster's artifact store, opened on first use (the coordinator says where it is)."""
        async with self._artifacts_lock:
            if self._artifacts is None:
                settings = self._artifact_settings
                if settings == ArtifactSettings():
                    settings = await self.calls.client.artifact_store()
                self._artifacts = await open_artifact_store(settings)
            return self._artifacts

    async def close(self) -> None:
        """Close what was opened on demand."""
        if self._artifacts is not None:
            await self._artifacts.close()
            self._artifacts = None


def _bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise NotAuthenticatedError("the Authorization header must read 'Bearer <API key or token>'")
    return conn.headers.get("x-api-key") or None
