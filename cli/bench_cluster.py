"""The cluster side of `claw bench`: its processes, and the probes that watch them.

- `Children` starts every child process of the benchmark and stops whatever still runs from a
  `finally`, so an exception or Ctrl-C never leaves a process behind.
- `BenchCluster` is a coordinator and W workers started as `claw up` starts them
  (`python -m cli coordinator start` / `worker start`, configured by `CLAW_*` variables, logs in
  files) against a nats-server the benchmark owns, under a prefix of their own.
- `RssSampler` keeps the peak RSS of processes (a thread polling psutil); `StateDb` reads the
  coordinator's SQLite file through a read-only connection, as an outside observer would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

import cli
from common.config import NatsSettings
from common.errors import ClawError
from common.states import NodeStatus
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# The project root: children import the packages from here even when they are not installed.
ROOT = Path(cli.__file__).resolve().parent.parent


class BenchError(ClawError):
    """The benchmark could not run to the end (a process died, a phase timed out)."""

    code = "bench"


class Children:
    """The benchmark's child processes; `stop_all` stops the ones still running, newest first."""

    def __init__(self) -> None:
        self._popens: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.nats: EmbeddedNatsServer | None = None

    def spawn(
        self, name: str, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `argv` with stdout and stderr in `log_path`, in a session of its own.

        Its own session: the terminal's Ctrl-C reaches only the benchmark, which then stops the
        children in order (workers before the coordinator before nats-server).
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env if env is not None else child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._popens.append((name, popen))
        return popen

    @staticmethod
    def stop(popen: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a graceful stop), SIGKILL if it is still running after `timeout_s`."""
        if popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()

    def stop_all(self) -> None:
        """Stop every child still running (newest first), then nats-server."""
        for _, popen in reversed(self._popens):
            self.stop(popen)
        if self.nats is not None:
            self.nats.stop()


def child_env(**settings: str) -> dict[str, str]:
    """This environment without the caller's `CLAW_*` settings, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAW_")}
    path = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(settings, PYTHONPATH=os.pathsep.join(path), PYTHONUNBUFFERED="1")
    return env


class BenchCluster:
    """A coordinator and `workers` worker processes under `prefix`, with their files in `root`."""

    def __init__(
        self,
        children: Children,
        nats: EmbeddedNatsServer,
        root: Path,
        *,
        prefix: str,
        workers: int,
        concurrency: int,
        queue_limit: int = 10_000,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self._children = children
        self._queue_limit = queue_limit
        self._extra_env = extra_env or {}
        self._nats = nats
        self.root = root
        self.prefix = prefix
        self.workers = workers
        self.concurrency = concurrency
        self.db_path = root / "claw.db"
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.worker_popens: list[subprocess.Popen[bytes]] = []

    @property
    def settings(self) -> NatsSettings:
        """How a client reaches this cluster."""
        return NatsSettings(url=self._nats.client_url, prefix=self.prefix)

    def log_path(self, name: str) -> Path:
        """Where the child `name` writes its log."""
        return self.root / "logs" / f"{name}.log"

    def _env(self) -> dict[str, str]:
        return child_env(
            CLAW_NATS_URL=self._nats.client_url,
            CLAW_NATS_MONITOR_URL=self._nats.monitor_url,
            CLAW_NATS_PREFIX=self.prefix,
            CLAW_COORDINATOR_DB_PATH=str(self.db_path),
            CLAW_TOOLS_SANDBOX_ROOT=str(self.root / "sandboxes"),
            CLAW_ARTIFACTS_LOCAL_DIR=str(self.root / "artifacts"),
            CLAW_LOG_LEVEL="warning",
            CLAW_LOG_FORMAT="json",
            # The throughput run submits all N tasks at once: the admission limits (a protection for
            # real clusters, docs/Reliability.md) are raised above N so that they are not what is measured.
            CLAW_COORDINATOR_MAX_QUEUED_PER_SKILL=str(self._queue_limit),
            CLAW_JETSTREAM_TASKS_MAX_PER_SUBJECT=str(max(self._queue_limit, 100_000)),
            **self._extra_env,
        )

    async def start(self) -> None:
        """Start the coordinator and the workers; return once every worker is online."""
        claw = [sys.executable, "-m", "cli"]
        env = self._env()
        self.coordinator = self._spawn("coordinator", [*claw, "coordinator", "start"], env)
        for i in range(1, self.workers + 1):
            argv = [*claw, "worker", "start", "--node-id", f"bench-w{i}", "--concurrency", str(self.concurrency)]
            self.worker_popens.append(self._spawn(f"worker-{i}", argv, env))
        await self._wait_ready()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return self._children.spawn(name, argv, self.log_path(name), env=env, cwd=self.root)

    async def _wait_ready(self) -> None:
        client = await ClawClient.connect(
            NatsSettings(url=self._nats.client_url, prefix=self.prefix, request_timeout_s=1)
        )
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline:
                self.check_alive()
                with contextlib.suppress(ClawError):
                    nodes = await client.nodes()
                    if sum(n.status == NodeStatus.ONLINE for n in nodes) >= self.workers:
                        return
                await asyncio.sleep(0.1)
        finally:
            await client.close()
        raise BenchError(f"the cluster did not come up within {READY_TIMEOUT_S:g} s; see {self.root / 'logs'}")

    def check_alive(self) -> None:
        """Raise if the coordinator or a worker has exited."""
        named = [("coordinator", self.coordinator)] + [(f"worker-{i}", p) for i, p in enumerate(self.worker_popens, 1)]
        for name, popen in named:
            if popen is not None and popen.poll() is not None:
                tail = _tail(self.log_path(name))
                raise BenchError(f"{name} exited with code {popen.returncode}; see {self.log_path(name)}:\n{tail}")

    def processes(self) -> dict[str, psutil.Process]:
        """The running processes by name: coordinator, worker-1..W."""
        found = {}
        if self.coordinator is not None:
            found["coordinator"] = psutil.Process(self.coordinator.pid)
        for i, popen in enumerate(self.worker_popens, 1):
            found[f"worker-{i}"] = psutil.Process(popen.pid)
        return found

    async def stop(self) -> None:
        """Workers first (they finish what they run), then the coordinator (it records their events)."""
        await asyncio.gather(*(asyncio.to_thread(Children.stop, p) for p in self.worker_popens))
        if self.coordinator is not None:
            await asyncio.to_thread(Children.stop, self.coordinator)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds the process (all its threads) has used so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine (all processes, all CPUs) has been busy so far, counting the
    time the hypervisor stole (on Linux `guest` is already inside `user`)."""
    times = psutil.cpu_times()
    busy = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(times, name, 0.0) for name in busy))


def rss_bytes(process: psutil.Process) -> int:
    """The process's resident set size now."""
    return int(process.memory_info().rss)


class RssSampler:
    """Samples the RSS of processes every `interval_s` in a thread and keeps each one's peak."""

    def __init__(self, processes: dict[str, psutil.Process], interval_s: float = 0.05) -> None:
        self._processes = processes
        self._interval_s = interval_s
        self.peaks: dict[str, int] = dict.fromkeys(processes, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            for name, process in self._processes.items():
                with contextlib.suppress(psutil.Error):
                    self.peaks[name] = max(self.peaks[name], rss_bytes(process))
            if self._stop.wait(self._interval_s):
                return


class StateDb:
    """The coordinator's SQLite file through a read-only connection; call from a thread (it blocks)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        return self._conn

    def succeeded(self, since: str = "") -> int:
        """How many tasks with an id from `since` on are `succeeded` (a range of the state index)."""
        row = (
            self._connection()
            .execute("SELECT COUNT(*) FROM tasks WHERE state = 'succeeded' AND task_id >= ?", (since,))
            .fetchone()
        )
        return int(row[0])

    def counts(self) -> dict[str, int]:
        """Tasks by state."""
        rows = self._connection().execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def file_sizes(self) -> tuple[int, int]:
        """Bytes of the database file and of its write-ahead log."""
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size, wal.stat().st_size if wal.exists() else 0

    def close(self) -> None:
        """Close the connection (if one was opened)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
