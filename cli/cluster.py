"""A coordinator, N workers and optionally the HTTP gateway as processes, started the way `claw up`
starts them: for `claw up`, the benchmark and the end-to-end tests.

Each is `claw coordinator start` / `claw worker start --node-id ID --concurrency C`, configured by
`CLAW_*` variables (the NATS URL and prefix, the database, JSON logs) over the environment its
caller chose, with its log in `<root>/logs/<name>.log`. The cluster is ready once the coordinator
answers and every worker is online; a child that exits before that is an error naming its log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import msgspec

from cli.processes import Child, Launcher
from common.aio import wait_any
from common.config import NatsSettings
from common.errors import ClawError
from common.states import NodeStatus
from communication.api_client import ClawClient

READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.1
WORKER_STOP_TIMEOUT_S = 40.0
COORDINATOR_STOP_TIMEOUT_S = 20.0
GATEWAY_STOP_TIMEOUT_S = 10.0


class ClusterError(ClawError):
    """A cluster's process exited, or the cluster did not come up in time."""

    code = "cluster"


class ClusterProcesses:
    """The coordinator and `workers` worker processes of one cluster (one prefix, one database)."""

    def __init__(
        self,
        launcher: Launcher,
        root: Path,
        *,
        nats_url: str,
        monitor_url: str,
        prefix: str,
        workers: int,
        concurrency: int,
        node_id: Callable[[int], str],
        env: dict[str, str] | None = None,
        coordinator_args: tuple[str, ...] = (),
        creds: Callable[[str], str | None] | None = None,
        client_creds: str | None = None,
        gateway_listen: str | None = None,
    ) -> None:
        self.launcher = launcher
        self.root = root
        # Each child's credentials file by its name (coordinator, worker-<i>); the launcher's own.
        self._creds = creds or (lambda name: None)
        self.settings = NatsSettings(url=nats_url, prefix=prefix, creds_file=client_creds)
        self.workers = workers
        self.concurrency = concurrency
        self.node_id = node_id
        self.db_path = root / "claw.db"
        self.logs = root / "logs"
        self.coordinator_args = coordinator_args
        # The HTTP gateway's HOST:PORT (None: no gateway); it writes its URL to `gateway_url_file`.
        self.gateway_listen = gateway_listen
        self.gateway_url_file = root / "gateway.url"
        self.env = (env or {}) | {
            "CLAW_NATS_URL": nats_url,
            "CLAW_NATS_MONITOR_URL": monitor_url,
            "CLAW_NATS_PREFIX": prefix,
            "CLAW_COORDINATOR_DB_PATH": str(self.db_path),
            "CLAW_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
        # By name (coordinator, worker-1..N): the current process of each, restarted ones included.
        self.children: dict[str, Child] = {}

    @property
    def prefix(self) -> str:
        """The cluster's NATS prefix."""
        return self.settings.prefix

    def start(self) -> None:
        """Start the coordinator, the workers and the gateway (returns at once; see `wait_ready`)."""
        self.start_child("coordinator")
        for i in range(1, self.workers + 1):
            self.start_child(f"worker-{i}")
        if self.gateway_listen is not None:
            self.gateway_url_file.unlink(missing_ok=True)
            self.start_child("gateway")

    @property
    def gateway_url(self) -> str | None:
        """The gateway's URL once it listens (None before, or without a gateway)."""
        if self.gateway_listen is None or not self.gateway_url_file.exists():
            return None
        return self.gateway_url_file.read_text().strip() or None

    def start_child(self, name: str) -> Child:
        """Start (or start again) the child `name`: `coordinator`, `worker-<i>` or `gateway`."""
        log_path = self.logs / f"{name}.log"
        creds = self._creds(name)
        env = self.env if creds is None else self.env | {"CLAW_NATS_CREDS_FILE": creds}
        if name == "gateway":
            assert self.gateway_listen is not None
            args = ("--listen", self.gateway_listen, "--url-file", str(self.gateway_url_file))
            child = self.launcher.claw(name, "gateway", "start", *args, env=env, log_path=log_path,
                                       stop_timeout_s=GATEWAY_STOP_TIMEOUT_S)  # fmt: skip
        elif name == "coordinator":
            child = self.launcher.claw(
                name,
                "coordinator",
                "start",
                *self.coordinator_args,
                env=env,
                log_path=log_path,
                stop_timeout_s=COORDINATOR_STOP_TIMEOUT_S,
            )
        else:
            index = int(name.removeprefix("worker-"))
            args = ("--node-id", self.node_id(index), "--concurrency", str(self.concurrency))
            child = self.launcher.claw(
                name, "worker", "start", *args, env=env, log_path=log_path, stop_timeout_s=WORKER_STOP_TIMEOUT_S
            )
        self.children[name] = child
        return child

    async def wait_ready(self, stop: asyncio.Event | None = None, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until the coordinator answers and every worker is online (or `stop` is set); raises if a
        child exits first or time runs out."""
        stop = stop or asyncio.Event()
        settings = msgspec.structs.replace(self.settings, request_timeout_s=1.0)
        async with await ClawClient.connect(settings, name="claw-launcher") as client:
            try:
                async with asyncio.timeout(timeout_s):
                    while not stop.is_set():
                        self.check_alive(during="at start-up")
                        if await self._all_online(client) and (self.gateway_listen is None or self.gateway_url):
                            return
                        await wait_any(stop, timeout_s=READY_POLL_S)
            except TimeoutError:
                raise ClusterError(
                    f"the cluster did not come up within {timeout_s:g} s; see the logs in {self.logs}"
                ) from None

    async def _all_online(self, client: ClawClient) -> bool:
        try:
            nodes = await client.nodes()
        except ClawError:
            return False  # the coordinator is not answering yet
        return sum(n.status == NodeStatus.ONLINE for n in nodes) >= self.workers

    def check_alive(self, during: str = "") -> None:
        """Raise if the coordinator or a worker has exited, with the end of its log."""
        for name, child in self.children.items():
            if not child.alive:
                where = f" {during}" if during else ""
                raise ClusterError(
                    f"{name} exited with code {child.returncode}{where}; see {child.log_path}:\n{child.tail()}"
                )

    def pids(self) -> dict[str, int]:
        """The process id of each child by name: coordinator, worker-1..N."""
        return {name: child.pid for name, child in self.children.items()}

    async def stop(self) -> None:
        """Workers first (they finish what they run), then the coordinator (it records their events)."""
        workers = [c for name, c in self.children.items() if name != "coordinator"]
        for child in workers:
            child.terminate()
        await asyncio.gather(*(_stop(child) for child in workers))
        if "coordinator" in self.children:
            await _stop(self.children["coordinator"])


async def _stop(child: Child) -> None:
    child.terminate()
    if await child.wait_async(child.stop_timeout_s) is None:
        child.kill()
