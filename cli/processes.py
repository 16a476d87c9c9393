"""The one launcher of cluster processes: nats-server, coordinators, workers and their helpers, for
`claw up`, `claw worker start --processes N`, the benchmark and the end-to-end tests.

A `Launcher` owns the children of one process. Every child
- runs in a session of its own, so the terminal's Ctrl-C reaches only the owner, which stops the
  children in order;
- dies with its owner however the owner dies, SIGKILL included (`common.child_process`): a `claw`
  process is sent SIGTERM and drains as on a normal stop (bounded by its own grace period), any
  other program SIGKILL;
- writes its output to a log file (appended, so a restarted child continues its log) or, if asked,
  to the owner's own stdout and stderr.

`stop_all` stops what still runs in the order a cluster needs: workers first (they finish their
tasks), then coordinators (they record the workers' last events), then the rest, then nats-server.
Each stop is SIGTERM, then SIGKILL once the child's stop timeout has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import cli
from common.child_process import die_with_parent
from common.errors import PortInUseError
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions

# The project root: children import the packages from here even when they are not installed.
ROOT = Path(cli.__file__).resolve().parent.parent
STOP_TIMEOUT_S = 30.0
# How often an async stop looks whether its children have exited.
POLL_S = 0.05

Role = Literal["worker", "coordinator", "other", "nats"]
STOP_ORDER: tuple[Role, ...] = ("worker", "coordinator", "other", "nats")


def claw_command(*args: str) -> list[str]:
    """The argv of `claw ARGS` run by this Python (`python -m cli`, as installed or not)."""
    return [sys.executable, "-m", "cli", *args]


def child_env(**settings: str) -> dict[str, str]:
    """This environment without the caller's `CLAW_*` settings, plus `settings`: for children that
    must not inherit a developer's cluster settings (the benchmark, the tests)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAW_")}
    path = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(settings, PYTHONPATH=os.pathsep.join(path), PYTHONUNBUFFERED="1")
    return env


_ROLE_OF_COMMAND: dict[str, Role] = {"worker": "worker", "coordinator": "coordinator", "nats": "nats"}


def role_of(args: tuple[str, ...] | list[str]) -> Role:
    """The role of `claw ARGS` by its command (global options such as `--nats URL` skipped)."""
    words = iter(args)
    for word in words:
        if word == "--nats":
            next(words, None)
        elif not word.startswith("-"):
            return _ROLE_OF_COMMAND.get(word, "other")
    return "other"


@dataclass(eq=False)
class Child:
    """One child process; its output is in `log_path` (None: it shares the owner's stdout/stderr)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None
    role: Role = "other"
    stop_timeout_s: float = STOP_TIMEOUT_S

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.popen.pid

    @property
    def alive(self) -> bool:
        """Whether it still runs."""
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Its exit code once it exited (-N: killed by signal N), else None."""
        return self.popen.poll()

    def output(self) -> str:
        """Everything it wrote to its log so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 5) -> str:
        """The last lines of its log, for error messages."""
        return "\n".join(self.output().strip().splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        """Send a signal if it still runs (SIGKILL for a crash, SIGSTOP to freeze it)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)

    def terminate(self) -> None:
        """Ask it to stop: SIGTERM (after SIGCONT, in case a test froze it)."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.signal(signal.SIGKILL)
        self.popen.wait()

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM, then SIGKILL after `timeout_s` (default: its stop timeout); the exit code."""
        self.terminate()
        try:
            return self.popen.wait(self.stop_timeout_s if timeout_s is None else timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.popen.wait()

    async def wait_async(self, timeout_s: float | None = None) -> int | None:
        """Until it exits (its exit code) or `timeout_s` passes (None); the event loop keeps running."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while (code := self.popen.poll()) is None:
            if deadline is not None and loop.time() >= deadline:
                return None
            await asyncio.sleep(POLL_S)
        return code


class Launcher:
    """Starts children and stops them all: `env` (default: this process's) and `cwd` are the
    defaults of every child, and `log_dir` is where `<name>.log` files go. `env` is kept, not
    copied: what the owner changes in it reaches the children started afterwards."""

    def __init__(
        self, *, log_dir: Path | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.log_dir = log_dir
        self.env = dict(os.environ) if env is None else env
        self.cwd = cwd
        self.children: list[Child] = []
        self.nats: EmbeddedNatsServer | None = None
        # Every nats-server it started (`nats` is the first): one, or the servers of a local cluster.
        self.nats_servers: list[EmbeddedNatsServer] = []

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        role: Role = "other",
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        inherit_output: bool = False,
        cwd: Path | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        death_signal: int = signal.SIGKILL,
    ) -> Child:
        """Start `argv`; its output is appended to `log_path` (default `<log_dir>/<name>.log`), or goes
        to this process's stdout and stderr with `inherit_output`. `death_signal` is what it gets if
        this process dies without stopping it.

        Call it from the main thread (the event loop's): the child's death signal is tied to the
        thread that starts it.
        """
        path = None if inherit_output else (log_path or self._default_log(name))
        with self._output(path) as out:
            popen = subprocess.Popen(
                argv,
                cwd=cwd or self.cwd,
                env=self.env | dict(env or {}),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                start_new_session=True,
                preexec_fn=die_with_parent(death_signal),  # only a prctl call: common.child_process
            )
        child = Child(name, popen, path, role, stop_timeout_s)
        self.children.append(child)
        return child

    def claw(
        self,
        name: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        inherit_output: bool = False,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> Child:
        """Start `claw ARGS` (its role, for the stop order, is its command)."""
        return self.spawn(
            name,
            claw_command(*args),
            role=role_of(args),
            env=env,
            log_path=log_path,
            inherit_output=inherit_output,
            stop_timeout_s=stop_timeout_s,
            death_signal=signal.SIGTERM,
        )

    def run_claw(
        self, *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 60.0, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `claw ARGS` to completion and capture its output (a client command)."""
        result = subprocess.run(
            claw_command(*args),
            cwd=self.cwd,
            env=self.env | dict(env or {}),
            input=input,
            capture_output=True,
            timeout=timeout_s,
        )
        return subprocess.CompletedProcess(
            result.args,
            result.returncode,
            result.stdout.decode(errors="replace"),
            result.stderr.decode(errors="replace"),
        )

    async def start_nats(
        self, options: NatsServerOptions, port_options: Mapping[str, str] | None = None
    ) -> EmbeddedNatsServer:
        """Start nats-server and wait until it is healthy; it is stopped last. `port_options` names
        the command's option for each port (`client`, `monitoring`) for the error of a port in use."""
        self.nats = EmbeddedNatsServer(options)
        self.nats_servers.append(self.nats)  # a launcher may run several (a benchmark's A and B)
        try:
            await self.nats.start_async()
        except PortInUseError as exc:
            raise _named_port(exc, port_options) from None
        return self.nats

    async def start_nats_cluster(
        self, options: Sequence[NatsServerOptions], port_options: Mapping[str, str] | None = None
    ) -> list[EmbeddedNatsServer]:
        """Start the servers of one NATS cluster together (each waits for its routes to the others
        before JetStream is healthy) and wait until all are healthy; they are stopped last."""
        servers = [EmbeddedNatsServer(o) for o in options]
        self.nats_servers.extend(servers)
        self.nats = servers[0]
        for server in servers:
            server.spawn()
        try:
            for server in servers:
                await asyncio.to_thread(server.wait_ready)
        except PortInUseError as exc:
            raise _named_port(exc, port_options) from None
        return servers

    async def restart_nats(self, server: EmbeddedNatsServer) -> EmbeddedNatsServer:
        """Start a server of the cluster that exited again, with the same ports and store."""
        again = EmbeddedNatsServer(server.options)
        self.nats_servers[self.nats_servers.index(server)] = again
        if server is self.nats:
            self.nats = again
        await again.start_async()
        return again

    def running(self) -> bool:
        """Whether any child (or nats-server) still runs."""
        return any(child.alive for child in self.children) or any(s.alive for s in self.nats_servers)

    def stop_all(self) -> None:
        """Stop every child still running, in the cluster's order; blocks until they are gone."""
        for stage in self._stages():
            for child in stage:
                child.terminate()
            for child in stage:
                child.stop()
        for server in self.nats_servers:
            server.stop()

    async def stop_all_async(self) -> None:
        """`stop_all` without blocking the event loop. Cancelled (a second Ctrl-C), it kills what
        still runs at once."""
        try:
            for stage in self._stages():
                for child in stage:
                    child.terminate()
                await asyncio.gather(*(self._await_stop(child) for child in stage))
        except asyncio.CancelledError:
            for child in self.children:
                child.kill()
            raise
        finally:
            for server in self.nats_servers:
                await asyncio.to_thread(server.stop)

    @staticmethod
    async def _await_stop(child: Child) -> None:
        if await child.wait_async(child.stop_timeout_s) is None:
            child.kill()

    def _stages(self) -> Iterator[list[Child]]:
        for role in STOP_ORDER:
            stage = [child for child in self.children if child.role == role and child.alive]
            if stage:
                yield stage

    def _default_log(self, name: str) -> Path:
        if self.log_dir is None:
            raise ValueError(f"no log file for {name}: give the launcher a log_dir or the child a log_path")
        return self.log_dir / f"{name}.log"

    @staticmethod
    @contextlib.contextmanager
    def _output(path: Path | None) -> Iterator[IO[bytes] | None]:
        if path is None:
            yield None
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as log_file:  # the child keeps its own descriptor
            yield log_file


def _named_port(exc: PortInUseError, port_options: Mapping[str, str] | None) -> PortInUseError:
    """The error of a port in use, naming the command's option that sets it."""
    if port_options is None or exc.role not in port_options:
        return exc
    hint = f"{exc}; pass another {port_options[exc.role]} (0 picks a free one)"
    return PortInUseError(hint, port=exc.port, role=exc.role)
