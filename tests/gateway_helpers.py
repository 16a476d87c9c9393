"""Test helpers for the HTTP gateway: a real gateway (uvicorn on a free loopback port) in this event
loop, API keys of each role, and an httpx client per key.

The fixtures `gw_config` (the test config with `GUARD_POLICY`) and `gw` (a coordinator, a worker and
a gateway on it) are shared by the gateway tests of tests/integration and tests/security (their
conftest.py imports them). A module changes them by overriding `guard_policy` or `gateway_settings`,
or `gw` itself (which may ask for the shared `gw`, to add keys to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.config import ClawConfig
from common.verbs import Role
from communication.connection import NatsConnection
from communication.nats_server import EmbeddedNatsServer
from gateway.server import GatewayServer, open_key_store
from gateway.settings import GatewaySettings
from tests.conftest import make_config
from tests.helpers import connected_client, running_coordinator, running_worker, wait_nodes_online

# One key per role, and one with every role.
ROLE_KEYS: dict[str, tuple[Role, ...]] = {
    "ada": (Role.ADMIN,),
    "otto": (Role.OPERATOR,),
    "april": (Role.APPROVER,),
    "sam": (Role.SUBMITTER,),
    "vera": (Role.VIEWER,),
}

# The default policy, plus a rule that holds echo tasks asking for it: approvals without any
# external effect once approved.
GUARD_POLICY = """
rules:
  - name: held-echo
    match: {skill: echo, input: {hold: true}}
    action: require_approval
    approvals: 1
  - name: low-risk
    match: {risk: [read_only, write_draft]}
    action: allow
default: require_approval
default_approvals: 1
"""


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


async def create_keys(
    config: ClawConfig, keys: Mapping[str, tuple[Role, ...]] = ROLE_KEYS, tenants: Mapping[str, str] | None = None
) -> dict[str, str]:
    """API keys for `keys` (name -> roles), created in the cluster's bucket; a name in `tenants` gets a
    key of that tenant."""
    conn = await NatsConnection.connect(config.nats, name="test-keys")
    try:
        store = await open_key_store(conn, config)
        return {name: (await store.create(name, roles, (tenants or {}).get(name)))[1] for name, roles in keys.items()}
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def running_gateway(
    config: ClawConfig, settings: GatewaySettings | None = None, *, keys: Mapping[str, tuple[Role, ...]] = ROLE_KEYS
) -> AsyncIterator[RunningGateway]:
    """A gateway in this event loop on a free port, stopped (and awaited) on exit; `keys` are made
    first with `config`'s credentials (none: a gateway's own credentials may not make any)."""
    made = await create_keys(config, keys) if keys else {}
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
        yield RunningGateway(server, server.url, made)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def gateway_cluster(
    config: ClawConfig, settings: GatewaySettings | None = None, *, worker: bool = True
) -> AsyncIterator[RunningGateway]:
    """A coordinator, a worker (online before this yields; none when not `worker`) and a gateway, in
    this event loop, each stopped (and awaited) on exit."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running_coordinator(config))
        if worker:
            await stack.enter_async_context(running_worker(config))
        gateway = await stack.enter_async_context(running_gateway(config, settings))
        if worker:
            async with connected_client(config) as client:
                await wait_nodes_online(client, 1)
        yield gateway


@pytest.fixture
def guard_policy() -> str:
    """The guard policy of `gw_config`'s coordinator (a module overrides this fixture for another)."""
    return GUARD_POLICY


@pytest.fixture
def gateway_settings() -> GatewaySettings:
    """The settings `gw` starts its gateway with (a module overrides this fixture for others)."""
    return GatewaySettings(port=0)


@pytest.fixture
def gw_config(nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, guard_policy: str) -> ClawConfig:
    """The test config, its coordinator guarded by `guard_policy`."""
    policy = tmp_path / "guard.yaml"
    policy.write_text(guard_policy)
    return make_config(nats_server, prefix, tmp_path, coordinator={"guard_policy": str(policy)})


@pytest.fixture
async def gw(gw_config: ClawConfig, gateway_settings: GatewaySettings) -> AsyncIterator[RunningGateway]:
    """A coordinator, a worker and a gateway on `gw_config`, with an API key per name of `ROLE_KEYS`."""
    async with gateway_cluster(gw_config, gateway_settings) as gateway:
        yield gateway


@dataclass
class SseMessage:
    """One Server-Sent Event: its id (None for `end`), its event name and its JSON data."""

    id: int | None
    event: str
    data: Any


async def read_sse(
    http: httpx.AsyncClient, path: str, *, last_event_id: int | None = None, stop_after: int | None = None
) -> list[SseMessage]:
    """The messages of an SSE stream until `end` (or `stop_after` messages: then it disconnects)."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    messages: list[SseMessage] = []
    async with http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(":") or line.startswith("retry:"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "data" not in fields:
                continue
            message = SseMessage(
                int(fields["id"]) if "id" in fields else None,
                fields.get("event", "message"),
                json.loads(fields["data"]),
            )
            fields = {}
            messages.append(message)
            if message.event == "end" or (stop_after is not None and len(messages) >= stop_after):
                break
    return messages
