"""The proof a gateway's request carries for the person it acts for, checked by the coordinator itself.

A gateway (an identity in `auth.gateways`) sends each request on its own subject, naming the person it
authenticated (`Claw-Acting-For`) and carrying the credential that person presented to it
(`Claw-Acting-Credential`: their API key or signed token). The coordinator does not believe the name:
it checks the credential exactly as a gateway does (communication/http_credentials.py, against the
keys bucket, which gateways may only read) and takes the person's name, roles and tenant from the
verified record. A request without a credential, with one that does not verify (forged, expired,
revoked) or with one of someone else than the person it names is `forbidden`, and logged as a
security event (never with the credential). So whoever steals a gateway's NATS credentials can act
only for people whose API key or token they also hold.

Answers are cached for `CACHE_S` at most (a revocation reaches here within that), keyed by a digest
of the credential; the credential itself is neither logged, echoed in an error, nor kept.
"""

from __future__ import annotations

from typing import Any

from nats.js.kv import KeyValue

from common.errors import NotAuthenticatedError, PermissionDeniedError
from common.identity import normalise
from common.log import get_logger
from common.verbs import Verb
from communication.http_credentials import CACHE_S, CredentialChecker, Holder

log = get_logger("coordinator.acting_proof")


class ActingProof:
    """Checks the credential a gateway forwards for the person it names."""

    def __init__(self, kv: KeyValue, prefix: str, *, cache_s: float = CACHE_S) -> None:
        self._checker = CredentialChecker(kv, prefix, cache_s=cache_s)

    async def person(self, gateway: str, named: str, credential: str | None, verb: Verb[Any, Any]) -> Holder:
        """The person `gateway`'s request acts for, from the record of the credential it forwarded;
        `PermissionDeniedError` when there is none, it does not verify, or it is not `named`'s."""
        shown = named[:64]
        if not credential:
            log.warning("security.acting_refused", identity=gateway, acting_for=shown, verb=verb.name,
                        reason="no credential")  # fmt: skip
            raise PermissionDeniedError(
                f"{gateway} acts for {shown!r} without their credential: a gateway forwards the API key or "
                "token the person presented (Claw-Acting-Credential)"
            )
        try:
            holder = await self._checker.check(credential)
        except NotAuthenticatedError as exc:
            log.warning("security.acting_refused", identity=gateway, acting_for=shown, verb=verb.name,
                        reason=str(exc))  # fmt: skip
            raise PermissionDeniedError(
                f"the credential {gateway} forwarded for {shown!r} does not verify: {exc}"
            ) from None
        if normalise(holder.name) != normalise(named):
            log.warning("security.acting_mismatch", identity=gateway, acting_for=shown, holder=holder.name,
                        verb=verb.name)  # fmt: skip
            raise PermissionDeniedError(
                f"{gateway} names {shown!r}, but the credential it forwarded is {holder.name}'s"
            )
        return holder
