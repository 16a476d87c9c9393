"""Test helpers: waiting on conditions with deadlines, in-process services, `claw` subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from cli.processes import Child, Launcher
from cli.processes import child_env as child_env  # the tests take it from here
from common.clock import SYSTEM_CLOCK
from common.config import ClawConfig
from common.event_kinds import EventKind
from common.events import TaskEvent
from common.ids import new_id
from common.models import TaskSpec
from common.states import Priority, TaskState
from communication.api_client import ClawClient
from coordinator.plugins import CoordinatorPlugin
from coordinator.service import Coordinator
from worker.context import TaskContext
from worker.service import Worker
from worker.skills import SkillRegistry

T = TypeVar("T")
# What `unknown skill` errors list when a worker with the built-in skills is online.
BUILTIN_SKILLS = (
    "echo, fail, fs.list, fs.mkdir, fs.read, fs.write, http.request, llm.chat, python.exec, shell.exec, sleep"
)
ROOT = Path(__file__).resolve().parent.parent
# Runs an async test once on each event loop (uvloop and asyncio's own; see tests/conftest.py).
BOTH_LOOPS = pytest.mark.asyncio(loop_factories=["uvloop", "asyncio"])


async def eventually(
    check: Callable[[], Awaitable[T] | T], *, timeout_s: float = 20.0, interval_s: float = 0.05, what: str = ""
) -> T:
    """Poll `check` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        result = check()
        last = await result if inspect.isawaitable(result) else result
        if last:
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or check}; last value: {last!r}")
        await asyncio.sleep(interval_s)


def wait_until(check: Callable[[], T], *, timeout_s: float = 20.0, interval_s: float = 0.05, what: str = "") -> T:
    """Synchronous `eventually`."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or check}; last value: {last!r}")
        time.sleep(interval_s)


def task_context(
    skill: str = "test", *, events: list[TaskEvent] | None = None, task_id: str | None = None, timeout_s: float = 60.0
) -> TaskContext:
    """A real TaskContext for calling a handler directly; what it reports is appended to `events`."""
    return TaskContext(
        task_id=task_id or new_id(),
        skill=skill,
        attempt=1,
        max_attempts=1,
        priority=Priority.NORMAL,
        node_id="test-node",
        timeout_s=timeout_s,
        _emit=(events if events is not None else []).append,
        _clock=SYSTEM_CLOCK,
    )


def worker_config(config: ClawConfig, **worker: Any) -> ClawConfig:
    """`config` with some worker settings changed."""
    return msgspec.structs.replace(config, worker=msgspec.structs.replace(config.worker, **worker))


def spec(skill: str, input: dict[str, Any] | None = None, **options: Any) -> TaskSpec:
    """A TaskSpec from a plain dict input."""
    return TaskSpec(skill=skill, input=msgspec.Raw(msgspec.json.encode(input or {})), **options)


async def succeeded(client: ClawClient, task_id: str) -> bool:
    """Whether the task succeeded; a task that failed or died fails the test at once (with the task),
    so an `eventually` over this does not wait out its deadline on a task that will never succeed."""
    task = await client.get_task(task_id, history=False)
    assert task.state not in (TaskState.FAILED, TaskState.DEAD), task
    return task.state == TaskState.SUCCEEDED


async def run_to_success(
    client: ClawClient, skill: str, input: dict[str, Any], *, tenant: str | None = None, what: str = "the task done"
) -> str:
    """Submit one task and wait until it succeeded; its id."""
    [result] = await client.submit_many([spec(skill, input)], tenant=tenant)
    await eventually(lambda: succeeded(client, result.task_id), what=what)
    return result.task_id


@contextlib.asynccontextmanager
async def running_coordinator(
    config: ClawConfig, *, plugins: Sequence[CoordinatorPlugin] = ()
) -> AsyncIterator[Coordinator]:
    """A coordinator in this event loop, stopped (and awaited) on exit; then every kind its event log
    holds must be an `EventKind`."""
    coordinator = await Coordinator.start(config, plugins=plugins)
    stop = asyncio.Event()
    task = asyncio.create_task(coordinator.run(stop))
    try:
        await _ready(coordinator.ready, task)
        yield coordinator
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert_known_event_kinds(Path(config.coordinator.db_path))


def stored_event_kinds(db_path: Path) -> set[str]:
    """Every kind in the event log of the database at `db_path` (none if there is no database)."""
    if not db_path.exists():
        return set()
    conn = sqlite3.connect(db_path)
    try:
        return {row[0] for row in conn.execute("SELECT DISTINCT kind FROM events")}
    except sqlite3.OperationalError:  # not migrated that far (a test that broke it on purpose)
        return set()
    finally:
        conn.close()


def assert_known_event_kinds(db_path: Path) -> None:
    """Every kind stored in the database's event log maps to an `EventKind` member."""
    known = {kind.value for kind in EventKind}
    unknown = stored_event_kinds(db_path) - known
    assert not unknown, f"event kinds in {db_path} that are no EventKind: {sorted(unknown)}"


@contextlib.asynccontextmanager
async def running_worker(config: ClawConfig, skills: SkillRegistry | None = None) -> AsyncIterator[Worker]:
    """A worker in this event loop, stopped gracefully on exit."""
    worker = await Worker.start(config, skills=skills)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await _ready(worker.ready, task)
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def _ready(ready: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Until `ready` is set; re-raises if the service's task ended first (it failed to start)."""
    waiter = asyncio.ensure_future(ready.wait())
    done, _ = await asyncio.wait([waiter, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task in done:
        task.result()
    assert ready.is_set(), "service not ready within 30 s"


@contextlib.asynccontextmanager
async def connected_client(config: ClawConfig, *, identity: str | None = None) -> AsyncIterator[ClawClient]:
    """A client, closed on exit; `identity`: the name it goes by on a server without authentication."""
    settings = config.nats if identity is None else msgspec.structs.replace(config.nats, identity=identity)
    client = await ClawClient.connect(settings)
    try:
        yield client
    finally:
        await client.close()


async def wait_nodes_online(client: ClawClient, count: int, timeout_s: float = 20.0) -> None:
    """Until `count` nodes are online in the coordinator's registry."""

    async def online() -> bool:
        return sum(n.status == "online" for n in await client.nodes()) >= count

    await eventually(online, timeout_s=timeout_s, what=f"{count} node(s) online")


# --- subprocesses ---------------------------------------------------------------------------------

# A `claw` child process of a test: the launcher's, as `claw up` and the benchmark start theirs.
ClawProcess = Child


@dataclass
class ProcessPool:
    """Starts `claw` subprocesses of a test with a shared environment (through `cli.processes`, the
    launcher of `claw up` and the benchmark, run from the repository) and stops them all at
    teardown: workers, then coordinators, then the rest."""

    env: dict[str, str]
    log_dir: Path
    launcher: Launcher = field(init=False)

    def __post_init__(self) -> None:
        self.launcher = Launcher(log_dir=self.log_dir, env=self.env, cwd=ROOT)

    @property
    def processes(self) -> list[Child]:
        """Every process started so far, in order."""
        return self.launcher.children

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        """Start `claw ARGS` in the background, its output in `<log_dir>/<name>-<n>.log`."""
        log_path = self.log_dir / f"{name}-{len(self.processes)}.log"
        return self.launcher.claw(name, *args, env=env, log_path=log_path, stop_timeout_s=15)

    def run(
        self, *args: str, timeout_s: float = 60.0, input: bytes | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `claw ARGS` to completion and capture its output (`env`: more variables for it)."""
        return self.launcher.run_claw(*args, timeout_s=timeout_s, input=input, env=env)

    def stop_all(self) -> None:
        """Stop every process it started."""
        self.launcher.stop_all()


def local_dirs(root: Path) -> dict[str, str]:
    """Settings that keep a test's artifacts, sandboxes and skill cache under `root` (not the repo)."""
    return {
        "CLAW_ARTIFACTS_LOCAL_DIR": str(root / "artifacts"),
        "CLAW_TOOLS_SANDBOX_ROOT": str(root / "sandboxes"),
        "CLAW_WORKER_SKILL_CACHE_DIR": str(root / "skill-cache"),
    }


@dataclass
class PtyProcess:
    """A `claw` child whose stdin, stdout and stderr are a pseudo-terminal, as in a user's shell.

    A thread drains the terminal into `output()` so the child never blocks on a full buffer.
    """

    popen: subprocess.Popen[bytes]
    master_fd: int
    _chunks: list[bytes] = field(default_factory=list)
    _reader: Any = None

    @classmethod
    def spawn(cls, *args: str, env: dict[str, str], columns: int = 100) -> PtyProcess:
        """Start `python -m cli ARGS` on a new pseudo-terminal of `columns` columns."""
        import fcntl
        import pty
        import struct
        import termios
        import threading

        master_fd, slave_fd = pty.openpty()
        fcntl.ioctl(slave_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        popen = subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            cwd=ROOT,
            env=env | {"TERM": "xterm-256color", "COLUMNS": str(columns)},
            stdin=slave_fd,
            stdout=slave_fd,
            stderr=slave_fd,
            start_new_session=True,
        )
        os.close(slave_fd)
        process = cls(popen, master_fd)
        process._reader = threading.Thread(target=process._drain, daemon=True)
        process._reader.start()
        return process

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master_fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def output(self) -> str:
        """Everything written to the terminal so far."""
        return b"".join(self._chunks).decode(errors="replace")

    def wait(self, timeout_s: float = 60.0) -> int:
        """Until it exits; then the whole output has been read."""
        code = self.popen.wait(timeout_s)
        self._reader.join(10)
        return code

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it lingers), and close the terminal."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self._reader is not None:
            self._reader.join(10)
        with contextlib.suppress(OSError):
            os.close(self.master_fd)
