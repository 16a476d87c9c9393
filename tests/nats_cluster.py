"""A local NATS cluster for tests: N file-backed nats-servers routed to each other on loopback."""

from __future__ import annotations

import json
import socket
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from communication.nats_server import EmbeddedNatsServer, NatsServerOptions


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalNatsCluster:
    """Servers `n1..nN` of cluster `claw`; a killed one restarts with the same ports and store."""

    root: Path
    size: int = 3
    servers: list[EmbeddedNatsServer] = field(default_factory=list)

    def start(self) -> LocalNatsCluster:
        """Start every server; each waits for its own health only (JetStream elects its leaders later)."""
        cluster_ports = [_free_port() for _ in range(self.size)]
        for i in range(self.size):
            routes = tuple(f"nats://127.0.0.1:{p}" for j, p in enumerate(cluster_ports) if j != i)
            options = NatsServerOptions(
                store_dir=self.root / f"n{i + 1}", port=_free_port(), http_port=_free_port(),
                server_name=f"n{i + 1}", cluster_name="claw", cluster_port=cluster_ports[i], routes=routes,
            )  # fmt: skip
            self.servers.append(EmbeddedNatsServer(options))
        for server in self.servers:
            server.spawn()
        for server in self.servers:
            server.wait_ready()
        return self

    @property
    def url(self) -> str:
        """Every server's client URL, comma-separated (what clients are given)."""
        return ",".join(f"nats://127.0.0.1:{s.options.port}" for s in self.servers)

    def named(self, name: str) -> EmbeddedNatsServer:
        """The server called `name` (n1, n2, ...)."""
        return next(s for s in self.servers if s.options.server_name == name)

    def restart(self, name: str) -> EmbeddedNatsServer:
        """Start a stopped or killed server again, same ports and store."""
        index = self.servers.index(self.named(name))
        server = EmbeddedNatsServer(replace(self.servers[index].options))
        server.start()
        self.servers[index] = server
        return server

    def stream_leader(self, stream: str) -> str:
        """The name of the server leading `stream` (asked of any live server)."""
        for server in self.servers:
            if not server.alive:
                continue
            url = f"http://127.0.0.1:{server.options.http_port}/jsz?accounts=true&streams=true"
            with urllib.request.urlopen(url, timeout=5) as response:
                info = json.load(response)
            for account in info.get("account_details", []):
                for detail in account.get("stream_detail", []):
                    if detail["name"] == stream and detail.get("cluster", {}).get("leader"):
                        return str(detail["cluster"]["leader"])
        raise AssertionError(f"no server leads {stream}")

    def stop(self) -> None:
        """Stop every server."""
        for server in self.servers:
            server.stop()
