"""Supervising child processes: `claw nats start` and the all-in-one `claw up`.

`claw up` starts, in order, the embedded nats-server, a coordinator and N workers, each a real process
with its log in `<data-dir>/logs/`, and waits until the coordinator answers and every worker has
registered. Children run in their own session so the terminal's Ctrl-C reaches only `claw up`, which
then stops them in reverse order: workers first (they finish their tasks), then the coordinator (it
records their last events), then NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cli.output import emit_json
from common.aio import wait_any
from common.config import ClawConfig, NatsSettings, load_config
from common.errors import ClawError, NatsServerError
from common.log import get_logger
from common.states import NodeStatus
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions

log = get_logger("cli.up")

READY_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 40.0
RESTART_BACKOFF_MIN_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
RESTART_RESET_AFTER_S = 60.0
COORDINATOR_STOP_TIMEOUT_S = 20.0


async def serve_nats(
    stop: asyncio.Event, *, port: int, http_port: int, store_dir: Path, json_out: bool = False
) -> None:
    """Run nats-server until `stop`; print where it listens (one JSON object with `json_out`)."""
    server = EmbeddedNatsServer(NatsServerOptions(store_dir=store_dir, port=port, http_port=http_port))
    await server.start_async()
    if json_out:
        emit_json({"nats_url": server.client_url, "monitor_url": server.monitor_url, "store_dir": str(store_dir)})
    else:
        print(
            f"nats-server ready: {server.client_url} (monitoring {server.monitor_url}, store {store_dir})",
            flush=True,
        )
    try:
        while not await wait_any(stop, timeout_s=0.5):
            if server.process is not None and server.process.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with code {server.process.returncode}; see {server.log_file}"
                )
    finally:
        await asyncio.to_thread(server.stop)


def local_dirs_under(data_dir: Path, config: ClawConfig) -> dict[str, str]:
    """Environment that moves the folders left at their defaults (artifacts, sandboxes, skill cache)
    under `data_dir`, so one `claw up` keeps everything in one place; folders the user chose stay."""
    defaults = ClawConfig()
    chosen = {
        "CLAW_ARTIFACTS_LOCAL_DIR": (config.artifacts.local_dir, defaults.artifacts.local_dir, "artifacts"),
        "CLAW_TOOLS_SANDBOX_ROOT": (config.tools.sandbox_root, defaults.tools.sandbox_root, "sandboxes"),
        "CLAW_WORKER_SKILL_CACHE_DIR": (config.worker.skill_cache_dir, defaults.worker.skill_cache_dir, "skill-cache"),
    }
    return {name: str(data_dir / folder) for name, (value, default, folder) in chosen.items() if value == default}


@dataclass
class Child:
    """A supervised `claw` child process and its log file."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    log_file: IO[bytes]

    def tail(self, lines: int = 5) -> str:
        """The last lines of its log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


class LocalCluster:
    """The processes of `claw up`."""

    def __init__(
        self,
        *,
        data_dir: Path,
        workers: int,
        nats_port: int,
        monitor_port: int,
        concurrency: int,
        metrics_port: int | None = None,
        json_out: bool = False,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.json_out = json_out
        self.workers = workers
        self.concurrency = concurrency
        self.metrics_port = metrics_port
        # Where the coordinator serves /metrics, once it answered (it knows the port 0 stood for).
        self.metrics_url: str | None = None
        self.logs = self.data_dir / "logs"
        self.nats = EmbeddedNatsServer(
            NatsServerOptions(
                store_dir=self.data_dir / "nats",
                port=nats_port,
                http_port=monitor_port,
                log_file=self.logs / "nats-server.log",
            )
        )
        self.children: list[Child] = []
        config = load_config()
        self._local_dirs = local_dirs_under(self.data_dir, config)
        artifacts = config.artifacts
        self.artifacts_location = (
            self._local_dirs.get("CLAW_ARTIFACTS_LOCAL_DIR", artifacts.local_dir)
            if artifacts.backend == "local"
            else f"s3://{artifacts.endpoint}/{artifacts.bucket}"
        )

    async def serve(self, stop: asyncio.Event) -> None:
        """Start everything, wait for `stop` (or a crash), stop everything."""
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            await self._start_nats()
            await self._start_children()
            await self._wait_ready(stop)
            self._banner()
            await self._supervise(stop)
        finally:
            print("stopping the cluster ...", file=sys.stderr, flush=True)
            await self._stop_children()
            await asyncio.to_thread(self.nats.stop)
            for child in self.children:
                child.log_file.close()
            print("cluster stopped", file=sys.stderr, flush=True)

    async def _start_nats(self) -> None:
        try:
            await self.nats.start_async()
        except NatsServerError as exc:
            raise NatsServerError(
                f"{exc} (is another cluster using port {self.nats.options.port}? pass --nats-port/--monitor-port)"
            ) from None

    def _env(self) -> dict[str, str]:
        # The user's own CLAW_* settings (config file, artifact backend, audit key, tracing) reach every
        # child; only what `claw up` itself owns is set over them.
        env = dict(os.environ)
        env.update(self._local_dirs)
        env.update(
            CLAW_NATS_URL=self.nats.client_url,
            CLAW_NATS_MONITOR_URL=self.nats.monitor_url,
            CLAW_NATS_CONNECT_RETRY_S="30",
            CLAW_NATS_PREFIX=os.environ.get("CLAW_NATS_PREFIX", "claw"),
            CLAW_COORDINATOR_DB_PATH=str(self.data_dir / "claw.db"),
            CLAW_LOG_FORMAT="json",
            CLAW_LOG_LEVEL=os.environ.get("CLAW_LOG_LEVEL", "info"),
            PYTHONUNBUFFERED="1",
        )
        return env

    async def _spawn(self, name: str, *args: str) -> Child:
        log_path = self.logs / f"{name}.log"
        log_file = await asyncio.to_thread(open, log_path, "ab")  # owned by the Child, closed at shutdown
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            env=self._env(), start_new_session=True,
        )  # fmt: skip
        child = Child(name, process, log_path, log_file)
        self.children.append(child)
        return child

    async def _start_children(self) -> None:
        metrics = [] if self.metrics_port is None else ["--metrics-port", str(self.metrics_port)]
        await self._spawn("coordinator", "coordinator", "start", *metrics)
        host = socket.gethostname().split(".")[0]
        for i in range(1, self.workers + 1):
            await self._spawn(
                f"worker-{i}",
                "worker",
                "start",
                "--node-id",
                f"{host}-w{i}",
                "--concurrency",
                str(self.concurrency),
            )

    async def _wait_ready(self, stop: asyncio.Event) -> None:
        """Until the coordinator answers and every worker is online; a child that dies is an error."""
        client = await ClawClient.connect(NatsSettings(url=self.nats.client_url, request_timeout_s=1.0))
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                while not stop.is_set():
                    self._check_alive()
                    with contextlib.suppress(ClawError):
                        nodes = await client.nodes()
                        if sum(n.status == NodeStatus.ONLINE for n in nodes) >= self.workers:
                            await self._find_metrics(client)
                            return
                    await wait_any(stop, timeout_s=0.2)
        except TimeoutError:
            raise ClawError(
                f"the cluster did not come up within {READY_TIMEOUT_S:g} s; see the logs in {self.logs}"
            ) from None
        finally:
            await client.close()

    async def _find_metrics(self, client: ClawClient) -> None:
        if self.metrics_port is not None:
            port = (await client.ping()).metrics_port
            self.metrics_url = None if port is None else f"http://127.0.0.1:{port}/metrics"

    def _check_alive(self) -> None:
        for child in self.children:
            if child.process.returncode is not None:
                raise ClawError(
                    f"{child.name} exited with code {child.process.returncode} at start-up; "
                    f"see {child.log_path}:\n{child.tail()}"
                )

    def _banner(self) -> None:
        if self.json_out:
            emit_json(
                {
                    "nats_url": self.nats.client_url,
                    "monitor_url": self.nats.monitor_url,
                    "workers": self.workers,
                    "data_dir": str(self.data_dir),
                    "logs": str(self.logs),
                    "artifacts": self.artifacts_location,
                    "metrics_url": self.metrics_url,
                }
            )
            return
        metrics = f"\n  Prometheus metrics: {self.metrics_url}" if self.metrics_url else ""
        print(
            f"""claw cluster up: nats-server {self.nats.client_url} (monitoring {self.nats.monitor_url}),
  a coordinator and {self.workers} worker(s); data and logs in {self.data_dir}{metrics}
  artifacts in {self.artifacts_location} (claw artifacts list)

In another terminal:
  claw --nats {self.nats.client_url} submit echo --input '{{"hello": "world"}}' --wait
  claw --nats {self.nats.client_url} task list
  claw --nats {self.nats.client_url} nodes
  claw --nats {self.nats.client_url} status

Ctrl-C stops the cluster.""",
            flush=True,
        )

    async def _supervise(self, stop: asyncio.Event) -> None:
        """Wait for `stop`; report children that exit on their own."""
        reported: set[str] = set()
        while not await wait_any(stop, timeout_s=0.5):
            for child in self.children:
                if child.process.returncode is not None and child.name not in reported:
                    reported.add(child.name)
                    print(
                        f"warning: {child.name} exited with code {child.process.returncode}; see {child.log_path}",
                        file=sys.stderr,
                        flush=True,
                    )
            if self.nats.process is not None and self.nats.process.poll() is not None:
                raise NatsServerError(f"nats-server exited; see {self.nats.log_file}")

    async def _stop_children(self) -> None:
        workers = [c for c in self.children if c.name.startswith("worker")]
        others = [c for c in self.children if not c.name.startswith("worker")]
        await asyncio.gather(*(_terminate(c, WORKER_STOP_TIMEOUT_S) for c in workers))
        await asyncio.gather(*(_terminate(c, COORDINATOR_STOP_TIMEOUT_S) for c in others))


async def _terminate(child: Child, timeout_s: float) -> None:
    if child.process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        child.process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout_s):
            await child.process.wait()
    except TimeoutError:
        log.warning("child.kill", name=child.name, after_s=timeout_s)
        with contextlib.suppress(ProcessLookupError):
            child.process.kill()
        await child.process.wait()


class WorkerSupervisor:
    """`claw worker start --processes N`: N worker processes, each restarted if it dies.

    A skill that segfaults or is OOM-killed takes one process down, not the node: the supervisor
    starts it again after a backoff (1 s doubling to 30 s, back to 1 s once a process has run for a
    minute). Each child keeps its node id (`<node>-p<i>`) across restarts. SIGTERM is passed on to
    every child, which drains gracefully.
    """

    def __init__(self, *, processes: int, node_id: str, child_args: list[str], nats_url: str, grace_s: float) -> None:
        self.processes = processes
        self.node_id = node_id
        self.child_args = child_args
        self.nats_url = nats_url
        self.grace_s = grace_s
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self.restarts: dict[int, int] = {}

    async def serve(self, stop: asyncio.Event) -> None:
        """Run the children until `stop`; then stop them all."""
        try:
            async with asyncio.TaskGroup() as tg:
                for index in range(1, self.processes + 1):
                    tg.create_task(self._keep_running(index, stop), name=f"worker-{index}")
        finally:
            await asyncio.gather(*(self._terminate(p) for p in self.children.values()))

    async def _keep_running(self, index: int, stop: asyncio.Event) -> None:
        backoff = RESTART_BACKOFF_MIN_S
        node_id = f"{self.node_id}-p{index}"
        while not stop.is_set():
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli", "--nats", self.nats_url, "worker", "start", "--node-id", node_id,
                *self.child_args, stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            self.children[index] = process
            started = asyncio.get_running_loop().time()
            await _exit_or_stop(process, stop)
            if stop.is_set():
                return  # serve() stops the child
            ran_s = asyncio.get_running_loop().time() - started
            if ran_s >= RESTART_RESET_AFTER_S:
                backoff = RESTART_BACKOFF_MIN_S
            self.restarts[index] = self.restarts.get(index, 0) + 1
            log.warning("worker.restart", node_id=node_id, exit_code=process.returncode, ran_s=round(ran_s, 1),
                        restart_in_s=backoff)  # fmt: skip
            if await wait_any(stop, timeout_s=backoff):
                return
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.grace_s + 10):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def _exit_or_stop(process: asyncio.subprocess.Process, stop: asyncio.Event) -> None:
    """Until the process exits or `stop` is set."""
    exited = asyncio.ensure_future(process.wait())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([exited, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (exited, stopped):
            waiter.cancel()
        await asyncio.gather(exited, stopped, return_exceptions=True)
