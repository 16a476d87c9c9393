"""The one way the gateway calls the coordinator API: a verb, for an authenticated principal.

`GatewayCalls.call(principal, verb, request)` refuses a verb whose declared role (`Verb.role`,
common/verbs.py) the principal does not hold, writes the principal's name over every field that
names who acts (`by`, `submitter`: a name in a request body is never believed), and sends the
request over NATS with the gateway's connection.

The coordinator takes who sends from the request's subject (`<prefix>.api.<identity>.<verb>`, the
gateway's own identity); each request also names the principal (`ActingFor`: header
`Claw-Acting-For`) and carries the credential they presented to the gateway (`Claw-Acting-Credential`).
The coordinator takes that only from identities listed in `auth.gateways`, checks the credential
itself and takes the person's name, roles (at most the gateway's own) and tenant from its record
(coordinator/acting_proof.py). So an approval through the gateway is the person's, and a stolen
gateway credential cannot act for anyone whose API key or token it does not also hold. A tenant's
key is held to its tenant's tasks here (gateway/tenancy.py) and again by the coordinator.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec

from common import api, verbs
from common.errors import PermissionDeniedError, TaskNotFoundError
from common.verbs import ReplyT, RequestT, Verb
from communication.api_client import ActingFor, ClawClient
from gateway.auth import Principal
from gateway.routes import identity_fields
from gateway.submit_batcher import SubmitBatcher
from gateway.tenancy import TenantScope


def _acting(principal: Principal) -> ActingFor:
    """Who the gateway acts for: the principal's name and tenant, and the credential they presented
    (the coordinator's proof: it takes their roles from that credential's record)."""
    return ActingFor(principal.name, principal.tenant, principal.credential)


def _identity_fields(request_type: type[msgspec.Struct]) -> tuple[str, ...]:
    return identity_fields(request_type)


class GatewayCalls:
    """Verb calls on behalf of principals, through one `ClawClient`."""

    def __init__(self, client: ClawClient) -> None:
        self.client = client
        self._stamped: dict[type[Any], tuple[str, ...]] = {}
        # Concurrent submits leave in shared requests (gateway/submit_batcher.py).
        self._submits = SubmitBatcher(client)
        # What a tenant's key may see and do (gateway/tenancy.py).
        self.tenants = TenantScope(client)

    async def close(self) -> None:
        """Let submits on their way finish."""
        await self._submits.close()

    def allowed(self, principal: Principal, verb: Verb[Any, Any]) -> bool:
        """Whether `principal` may call `verb`."""
        return principal.may(verb.role)

    def check(self, principal: Principal, verb: Verb[Any, Any]) -> None:
        """`PermissionDeniedError` unless `principal` may call `verb` (callers check before reading a
        body, so a refused caller learns nothing about what it sent)."""
        if not self.allowed(principal, verb):
            roles = ", ".join(sorted(principal.roles)) or "none"
            raise PermissionDeniedError(
                f"{principal.name} may not call {verb.name}: it needs the {verb.role.value} role (has {roles})"
            )

    async def call(self, principal: Principal, verb: Verb[RequestT, ReplyT], request: RequestT) -> ReplyT:
        """Call `verb` as `principal`; `PermissionDeniedError` when its roles do not allow it."""
        self.check(principal, verb)
        stamped = self._stamp(principal, verb, request)
        acting = _acting(principal)
        tenant = principal.tenant
        if tenant is not None:
            stamped = await self.tenants.before(tenant, acting, verb, stamped)
        if isinstance(stamped, api.SubmitRequest) and verb is verbs.SUBMIT:
            reply = cast(ReplyT, await self._submits.submit(stamped, acting))
        else:
            reply = await self.client.call(verb, stamped, acting_for=acting)
        if tenant is not None:
            reply = await self.tenants.after(tenant, acting, verb, reply)
        return reply

    async def owns(self, principal: Principal, task_id: str) -> bool:
        """Whether `principal` may see the task `task_id` (always, for a key without a tenant)."""
        if principal.tenant is None:
            return True
        acting = _acting(principal)
        try:
            await self.tenants.check_task(principal.tenant, acting, task_id)
        except TaskNotFoundError:
            return False
        return True

    def _stamp(self, principal: Principal, verb: Verb[RequestT, Any], request: RequestT) -> RequestT:
        fields = self._stamped.get(verb.request)
        if fields is None:
            fields = self._stamped[verb.request] = _identity_fields(verb.request)
        if not fields:
            return request
        return msgspec.structs.replace(request, **dict.fromkeys(fields, principal.name))
