"""Whose task it is: the one place that decides the tenant of a submit.

Today a submit names its tenant (`claw submit --tenant acme`, `ClawClient.submit(..., tenant=)`) or
gets `default`. Once callers authenticate (the trust issue), the tenant comes from the caller's
credentials: `Caller.tenant` is then set by the API server and wins, and a request naming another
tenant is refused, so a name in a request can never buy another tenant's quota or share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from common.api import SubmitRequest
from common.errors import InvalidInputError

DEFAULT_TENANT = "default"
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request, as their credentials say (None fields: not known yet)."""

    tenant: str | None = None


def check_tenant_name(tenant: str) -> str:
    """`tenant` if it is a valid tenant name; else one clear error."""
    if not TENANT_PATTERN.match(tenant):
        raise InvalidInputError(
            f"tenant {tenant!r} is not a valid tenant name: 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return tenant


def tenant_of_submit(request: SubmitRequest, caller: Caller | None = None) -> str:
    """The tenant a submit's tasks belong to: the caller's (from credentials) when known, else the one
    the request names, else `default`."""
    return tenant_of_request(request.tenant, caller)


def tenant_of_request(named: str | None, caller: Caller | None = None) -> str:
    """The tenant of a request that names `named` (a submit, a workflow run, a schedule): the
    caller's when known, else the named one, else `default`."""
    if caller is not None and caller.tenant is not None:
        if named is not None and named != caller.tenant:
            raise InvalidInputError(
                f"tenant {named!r} is not yours: your credentials are for tenant {caller.tenant!r}; leave --tenant out"
            )
        return caller.tenant
    if named is None:
        return DEFAULT_TENANT
    return check_tenant_name(named)
