"""Who may call which API verb: the identity comes from the request's subject, its roles from the
registry and config, and every verb's role from `common/verbs.py`.

The server's permissions let a connection publish API requests only under its own identity
(`<prefix>.api.<identity>.<verb>`), so the identity token of a request's subject is who sent it.
Its API roles are those the identity registry lists (`claw creds create --role ...`, read from
`auth.dir`), plus `auth.roles` of the config. On a server without authentication anyone can claim
any name: there an identity holds the roles `auth.roles` gives it, else every role (an open
cluster, as before authentication existed; `claw up` turns authentication on).

Every verb needs its declared role; read-only verbs (`viewer`) are open to any identity with a role.
"""

from __future__ import annotations

import asyncio
from typing import Any

from common.clock import Clock
from common.config import AuthSettings
from common.errors import ConfigError, CredentialsError, PermissionDeniedError
from common.identity import IDENTITY_PATTERN, normalise
from common.log import get_logger
from common.verbs import Role, Verb, roles_allow
from communication.auth_registry import IdentityRegistry, registry_path

log = get_logger("coordinator.authorization")

# How old the registry read may be before a request makes it read again (new credentials work
# within this long of `claw creds create`; a revoked identity is disconnected by the server at once).
REGISTRY_MAX_AGE_S = 2.0
# For an identity the last read did not know: read again (the server let it connect, so it was issued
# since; only registered identities get that far, so this cannot be used to make the coordinator spin).
UNKNOWN_MAX_AGE_S = 0.0


class Authorizer:
    """Answers "may this identity call this verb?" with one clear refusal when not."""

    def __init__(self, settings: AuthSettings, clock: Clock, *, open_bus: bool) -> None:
        self._settings = settings
        self._clock = clock
        self._open_bus = open_bus
        self._configured = _configured_roles(settings)
        self._gateways = frozenset(normalise(name) for name in settings.gateways)
        self._registry: dict[str, frozenset[Role]] = {}
        self._tenants = {normalise(name): tenant for name, tenant in settings.tenants.items()}
        self._registry_tenants: dict[str, str] = {}
        self._read_at = float("-inf")
        self._read_mtime: int | None = None
        self._lock = asyncio.Lock()

    @property
    def open_bus(self) -> bool:
        """Whether the server lets anyone connect (identities are then only claimed, not proven)."""
        return self._open_bus

    async def check(self, identity: str, verb: Verb[Any, Any]) -> None:
        """Raise `PermissionDeniedError` unless `identity` holds the role `verb` needs."""
        if not IDENTITY_PATTERN.fullmatch(identity):
            raise PermissionDeniedError(f"'{identity[:64]}' is not an identity; connect with credentials")
        roles = await self.roles_of(identity)
        if roles_allow(roles, verb.role):
            return
        held = ", ".join(sorted(roles)) or "no role"
        log.warning("security.api_refused", identity=identity, verb=verb.name, needs=verb.role.value, holds=held)
        raise PermissionDeniedError(
            f"{verb.name} needs the {verb.role.value} role; {identity} holds {held} "
            f"(an admin issues credentials with it: claw creds create --role {verb.role.value} ...)"
        )

    def check_gateway(self, gateway: str, person: str, verb: Verb[Any, Any]) -> None:
        """`PermissionDeniedError` unless `gateway` may send requests on others' behalf (`auth.gateways`;
        anyone on a server without authentication, where every name is only claimed)."""
        if not self._open_bus and normalise(gateway) not in self._gateways:
            log.warning("security.acting_refused", identity=gateway, acting_for=person[:64], verb=verb.name,
                        reason="not a gateway")  # fmt: skip
            raise PermissionDeniedError(
                f"{gateway} may not act for others (auth.gateways lists the identities that may)"
            )

    async def check_acting(self, gateway: str, person: str, granted: frozenset[Role], verb: Verb[Any, Any]) -> None:
        """`PermissionDeniedError` unless the roles of `person`'s verified credential (`granted`), cut to
        the gateway's own, allow `verb`."""
        roles = granted & await self.roles_of(gateway)
        if roles_allow(roles, verb.role):
            return
        held = ", ".join(sorted(roles)) or "no role"
        log.warning("security.api_refused", identity=person, via=gateway, verb=verb.name, needs=verb.role.value)
        raise PermissionDeniedError(f"{verb.name} needs the {verb.role.value} role; {person} holds {held}")

    async def acting_tenant(self, gateway: str, person: str, recorded: str | None, verb: Verb[Any, Any]) -> str | None:
        """The tenant a gateway's request for `person` is held to, None for every tenant's: the tenant
        of their verified credential's record (`recorded`), unless their own binding (`auth.tenants`,
        their NATS credentials) says otherwise: a credential of every tenant is then held to that
        tenant, and a credential of another tenant is refused."""
        bound = await self.tenant_of(person)
        if bound is None or recorded == bound:
            return recorded
        if recorded is None:
            return bound
        log.warning("security.acting_tenant_refused", identity=gateway, acting_for=person, tenant=recorded,
                    bound=bound, verb=verb.name)  # fmt: skip
        raise PermissionDeniedError(
            f"{person} belongs to tenant {bound!r}; {gateway} may not act for them in {recorded!r}"
        )

    async def roles_of(self, identity: str) -> frozenset[Role]:
        """The API roles of `identity`."""
        name = normalise(identity)
        configured = self._configured.get(name)
        if self._open_bus:
            return frozenset(Role) if configured is None else configured
        await self._refresh(REGISTRY_MAX_AGE_S)
        if name not in self._registry and await self._registry_changed():
            # The server let it connect, so it may have been issued just now: read the registry again.
            await self._refresh(UNKNOWN_MAX_AGE_S)
        return self._registry.get(name, frozenset()) | (configured or frozenset())

    async def tenant_of(self, identity: str) -> str | None:
        """The tenant `identity` is bound to (config `auth.tenants`, else its credentials), if any."""
        name = normalise(identity)
        if name in self._tenants:
            return self._tenants[name]
        if self._open_bus:
            return None
        await self._refresh(REGISTRY_MAX_AGE_S)
        return self._registry_tenants.get(name)

    async def _registry_changed(self) -> bool:
        """Whether the registry file changed since the last read (a stat, not a read: an identity the
        server knows but the registry does not, such as a NATS user of one's own, costs little)."""
        if self._settings.dir is None:
            return False
        return await asyncio.to_thread(_mtime, self._settings.dir) != self._read_mtime

    async def _refresh(self, max_age_s: float) -> None:
        if self._settings.dir is None or self._clock.monotonic() - self._read_at < max_age_s:
            return
        async with self._lock:
            if self._clock.monotonic() - self._read_at < max_age_s:
                return
            try:
                mtime = await asyncio.to_thread(_mtime, self._settings.dir)
                registry = await asyncio.to_thread(IdentityRegistry.load, self._settings.dir)
            except CredentialsError as exc:
                log.error("auth.registry_unreadable", error=str(exc))  # keep the last good roles
            else:
                self._registry = {normalise(r.name): r.api_roles for r in registry.all()}
                self._registry_tenants = {normalise(r.name): r.tenant for r in registry.all() if r.tenant}
                self._read_mtime = mtime
            self._read_at = self._clock.monotonic()


def _mtime(auth_dir: str) -> int | None:
    """When the registry file of `auth_dir` last changed (None: there is none)."""
    try:
        return registry_path(auth_dir).stat().st_mtime_ns
    except OSError:
        return None


def _configured_roles(settings: AuthSettings) -> dict[str, frozenset[Role]]:
    """`auth.roles` checked: every role named must be an API role."""
    known = {r.value for r in Role}
    mapping: dict[str, frozenset[Role]] = {}
    for name, roles in settings.roles.items():
        unknown = [r for r in roles if r not in known]
        if unknown:
            raise ConfigError(
                f"auth.roles: {name} has unknown role(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        mapping[normalise(name)] = frozenset(Role(r) for r in roles)
    return mapping
