"""Test helpers for the HTTP gateway: a real gateway (uvicorn on a free loopback port) in this event
loop, API keys of each role, and an httpx client per key."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from common.config import ClawConfig
from common.verbs import Role
from communication.connection import NatsConnection
from gateway.server import GatewayServer, open_key_store
from gateway.settings import GatewaySettings

# One key per role, and one with every role.
ROLE_KEYS: dict[str, tuple[Role, ...]] = {
    "ada": (Role.ADMIN,),
    "otto": (Role.OPERATOR,),
    "april": (Role.APPROVER,),
    "sam": (Role.SUBMITTER,),
    "vera": (Role.VIEWER,),
}


@dataclass
class RunningGateway:
    """A gateway serving at `url`, and the API key of each name in `ROLE_KEYS`."""

    server: GatewayServer
    url: str
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, name: str | None, **options: object) -> httpx.AsyncClient:
        """An HTTP client sending `name`'s key (None: no key)."""
        headers = {} if name is None else {"Authorization": f"Bearer {self.keys[name]}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30.0, **options)  # type: ignore[arg-type]


async def create_keys(config: ClawConfig, keys: dict[str, tuple[Role, ...]] = ROLE_KEYS) -> dict[str, str]:
    """API keys for `keys` (name -> roles), created in the cluster's bucket."""
    conn = await NatsConnection.connect(config.nats, name="test-keys")
    try:
        store = await open_key_store(conn, config)
        return {name: (await store.create(name, roles))[1] for name, roles in keys.items()}
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def running_gateway(config: ClawConfig, settings: GatewaySettings | None = None) -> AsyncIterator[RunningGateway]:
    """A gateway in this event loop on a free port, stopped (and awaited) on exit."""
    keys = await create_keys(config)
    server = await GatewayServer.start(config, settings or GatewaySettings(port=0))
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    try:
        async with httpx.AsyncClient(base_url=server.url) as probe:
            for _ in range(500):
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get("/healthz")).status_code == 200:
                        break
                if task.done():
                    await task
                await asyncio.sleep(0.02)
        yield RunningGateway(server, server.url, keys)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
