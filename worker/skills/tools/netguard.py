"""HTTP clients for http.request and llm.chat that connect only where addresses.py allows.

The check lives in the connection itself: a network backend of httpcore (httpx's engine) resolves the
host, checks every address it got, and opens the TCP connection to an address it checked - so a
second DNS answer (rebinding) cannot slip in between check and connect, and every connection is
checked, the first and those of redirects alike. TLS still verifies the certificate against the
host name (SNI and the Host header come from the URL, not from the address).

httpx and httpcore are imported with this module, on a worker's first HTTP call (http.py says why).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from common.errors import PermanentError
from worker.skills.tools.addresses import AddressPolicy, IPAddress

RequestHook = Callable[[httpx.Request], Awaitable[None]]


class RefusedAddress(PermanentError):
    """A connection to an address the worker's policy refuses (loopback, private, ...)."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks and connects to the checked address; refuses Unix sockets."""

    def __init__(self, policy: AddressPolicy, skill: str) -> None:
        self._policy = policy
        self._skill = skill
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface names it so
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A connection to the first allowed address of `host` that answers."""
        allowed = self.allowed_addresses(host, await _resolve(host, port))
        failure: httpcore.ConnectError | None = None
        for address in allowed:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    def allowed_addresses(self, host: str, addresses: list[IPAddress]) -> list[IPAddress]:
        """The addresses of `host` the policy allows; none allowed is a refusal naming the first."""
        allowed = [address for address in addresses if self._policy.refusal(host, address) is None]
        if allowed:
            return allowed
        address = addresses[0]
        kind = self._policy.refusal(host, address) or "refused"
        article = "an" if kind[0] in "aeiou" else "a"
        raise RefusedAddress(
            f"{self._skill}: {host} is {address}, {article} {kind} address, which this worker does not "
            "connect to; to allow it, add it to tools.http_allow_private in the worker's config"
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface names it so
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never: a Unix socket is a local service."""
        raise RefusedAddress(f"{self._skill}: Unix sockets are not connected to")

    async def sleep(self, seconds: float) -> None:
        """As the inner backend sleeps."""
        await self._inner.sleep(seconds)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal, in any form getaddrinfo reads, included)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
    addresses: list[IPAddress] = []
    for _, _, _, _, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise httpcore.ConnectError(f"cannot resolve {host}: no address")
    return addresses


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with a pool that connects through a GuardedBackend."""

    def __init__(self, backend: GuardedBackend) -> None:
        super().__init__(trust_env=False)
        # httpx builds its pool without a way to pass a network backend; replace it, and fail loudly
        # rather than connect unchecked should a new httpx keep its pool elsewhere.
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise TypeError("httpx.AsyncHTTPTransport no longer keeps its pool in _pool: netguard needs updating")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), network_backend=backend
        )


def guarded_client(
    policy: AddressPolicy,
    skill: str,
    *,
    timeout_s: float,
    max_redirects: int = 0,
    on_request: RequestHook | None = None,
) -> httpx.AsyncClient:
    """An httpx client whose every connection is checked; it follows up to `max_redirects`
    redirects (0: none), calling `on_request` before each request, redirects included."""
    return httpx.AsyncClient(
        transport=GuardedTransport(GuardedBackend(policy, skill)),
        timeout=timeout_s,
        follow_redirects=max_redirects > 0,
        max_redirects=max_redirects,
        trust_env=False,
        event_hooks={"request": [on_request]} if on_request is not None else None,
    )
