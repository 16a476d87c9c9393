"""A userspace TCP proxy that injects network faults between a `claw` process and nats-server.

Not a fake of NATS: the real server answers everything; the proxy only delays bytes. `stall_on`
holds the client-to-server direction for `stall_s` from the first client chunk holding a marker
(e.g. `$JS.API`, the first JetStream request), as a server electing its leaders or a congested link
would; `blackhole` holds it for good. `partition()` holds both directions of every connection
until `heal()` (a network partition that heals).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class StallingProxy:
    """Listens on a free loopback port and forwards to `target_port`."""

    target_port: int
    stall_on: bytes = b"$JS.API"
    stall_s: float = 0.0
    stalls: int = 0
    _open: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        """Where clients connect."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def partition(self) -> None:
        """Hold every byte, both ways, from now until `heal()`."""
        self._open.clear()

    def heal(self) -> None:
        """Let the held bytes and everything after them through."""
        self._open.set()

    @property
    def url(self) -> str:
        """The NATS URL of the proxy."""
        return f"nats://127.0.0.1:{self.port}"

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, target_port: int, *, stall_s: float, stall_on: bytes = b"$JS.API"
    ) -> AsyncIterator[StallingProxy]:
        """Start the proxy for the block; every connection is closed after it, also on failure."""
        proxy = cls(target_port, stall_on=stall_on, stall_s=stall_s)
        proxy.heal()
        proxy._server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
        try:
            yield proxy
        finally:
            proxy._server.close()
            for task in list(proxy._tasks):
                task.cancel()
            await asyncio.gather(*proxy._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        up = asyncio.ensure_future(self._pipe(client_r, server_w, stalling=True))
        down = asyncio.ensure_future(self._pipe(server_r, client_w, stalling=False))
        for task in (up, down):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
        for writer in (server_w, client_w):
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, stalling: bool) -> None:
        stalled = False
        while data := await reader.read(65536):
            if stalling and not stalled and self.stall_on in data:
                stalled = True
                self.stalls += 1
                await asyncio.sleep(self.stall_s)  # the injected fault: the link holds these bytes
            await self._open.wait()  # nothing crosses while partitioned
            writer.write(data)
            await writer.drain()
