"""The gateway process: a Starlette app on uvicorn, one NATS connection, no state of its own.

    server = await GatewayServer.start(config, settings)
    await server.run(stop)          # serves until `stop` is set, then closes everything

Signals stay the CLI's (STYLE.md): uvicorn's own handlers are not installed; `stop` ends serving.
The CLI also tunes the garbage collector once the server started (`tune_garbage_collector`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from common.config import ClawConfig
from common.errors import ConfigError
from common.log import get_logger
from communication.api_client import ClawClient
from communication.connection import NatsConnection
from communication.topology import Topology
from gateway.app import build_app
from gateway.auth import KeyStore
from gateway.calls import GatewayCalls
from gateway.context import Gateway
from gateway.live import LiveHub
from gateway.sessions import open_session_signer
from gateway.settings import GatewaySettings

log = get_logger("gateway.server")

# Net allocations of tracked objects before the youngest generation is collected (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000


async def open_key_store(conn: NatsConnection, config: ClawConfig) -> KeyStore:
    """The cluster's API keys and token records (the coordinator creates their bucket)."""
    kv = await Topology(conn, config.jetstream).gateway_keys_kv()
    return KeyStore(kv, prefix=config.nats.prefix)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the CLI owns signals and sets `should_exit` through `stop`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    """One running gateway."""

    def __init__(
        self, gateway: Gateway, hub: LiveHub, app: Starlette, conn: NatsConnection, sock: socket.socket
    ) -> None:
        self.gateway, self.hub, self.app, self._conn, self._sock = gateway, hub, app, conn, sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    @classmethod
    async def start(cls, config: ClawConfig, settings: GatewaySettings) -> GatewayServer:
        """Connect to NATS, open the keys bucket, bind the listening socket."""
        conn = await NatsConnection.connect(config.nats, name="claw-gateway")
        try:
            keys = await open_key_store(conn, config)
            signer = await open_session_signer(conn, config, settings.session_ttl_s)
            calls = GatewayCalls(ClawClient(conn, owns_connection=False))
            gateway = Gateway(calls, keys, signer, settings, config.artifacts)
            hub = LiveHub(calls.client)
            sock = _bind(settings.host, settings.port)
        except BaseException:
            await conn.close()
            raise
        return cls(gateway, hub, build_app(gateway, hub), conn, sock)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set; then finish open requests (bounded) and close everything."""
        server = _Server(
            uvicorn.Config(
                self.app,
                log_config=None,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=5,
                ws_ping_interval=20.0,
            )
        )
        serving = asyncio.create_task(server.serve(sockets=[self._sock]), name="uvicorn")
        try:
            while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn offers only a flag
                await asyncio.sleep(0.01)
            if server.started:
                log.info("gateway.listening", url=self.url)
                self._announce()
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            await self.hub.close()  # ends the live streams, so uvicorn need not wait for them
            server.should_exit = True
            await serving
        finally:
            if not serving.done():
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
            await self.close()

    async def close(self) -> None:
        """Close the live feed, the artifact store, the socket and the NATS connection."""
        await self.hub.close()
        await self.gateway.calls.close()
        await self.gateway.close()
        self._sock.close()
        await self._conn.close()

    def _announce(self) -> None:
        """Write the URL to the url file (atomically) for whoever started this gateway."""
        path = self.gateway.settings.url_file
        if path:
            target = Path(path)
            tmp = target.with_suffix(target.suffix + ".tmp")
            tmp.write_text(self.url + "\n")
            tmp.replace(target)


def tune_garbage_collector() -> None:
    """Keep the collector's pauses off the requests' latency (every request in flight waits for them).

    Start-up's objects (modules, the app, the route table) live as long as the process: frozen, a
    full collection does not walk them (50-200 ms each, measured under 200 submits in flight). And
    the young generation is collected after `GC_YOUNG_THRESHOLD` net allocations instead of 700: 200
    requests in flight hold thousands of young objects at any moment, so at 700 a collection ran
    every few requests and moved the objects of requests still in flight to the older generations,
    whose collections then ran often too (on the shared 2-core machine: 0.9 s spent collecting in
    12,000 submits at 700, 0.05 s at 10,000). Process-wide, so the CLI calls it, not the server.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket (port 0: a free one), made here so the URL is known before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; pass another --listen") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock
