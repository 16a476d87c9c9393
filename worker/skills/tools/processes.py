"""Running a tool process (shell.exec, python.exec, `command:` skills): confined, limited, captured,
and ended with its whole tree.

Each run starts the launcher (launcher.py) - inside bwrap where it works, as the sandbox user when
the worker is root (isolation.py) - in a cgroup of its own where the worker may make one
(cgroups.py). While it runs, a watchdog checks the tree's memory and process count every
`tools.sandbox_watch_interval_s` (without a cgroup it is the only holder of those limits; with one it
notices the kernel's OOM kills) and kills the tree over a limit. When the task's process exits, runs
past its time limit, or the handler is cancelled (the task's timeout, a worker shutdown), every
process of the run is killed: the cgroup's members, the tree below the launcher (a subreaper, so a
setsid or double-forked process is still in it) and the launcher's process group. Output is taken as
it arrives (a SubprocessProtocol); each stream keeps its first `max_output_bytes` and the rest is
dropped, so a chatty child never blocks on a full pipe. After the run the workspace must be within
`tools.workspace_max_bytes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from common.config import ToolSettings
from common.errors import InvalidInputError, PermanentError, ToolTimeoutError
from common.log import get_logger
from worker.skills.tools import process_tree
from worker.skills.tools.cgroups import RunCgroup
from worker.skills.tools.isolation import Isolation, Launch
from worker.skills.tools.quota import check_workspace_after_run

log = get_logger("worker.skills.tools")

SECRET_NAME_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "AUTH")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# PATH, HOME and TMPDIR are the sandbox's; the loader's variables would let any allowed program load code.
RESERVED_ENV_NAMES = ("PATH", "HOME", "TMPDIR")
RESERVED_ENV_PREFIXES = ("LD_", "DYLD_")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_LANG = "C.UTF-8"
# After the tree is killed its pipes close at once; this only bounds a process that got away.
REAP_TIMEOUT_S = 5.0
MIB = 1024 * 1024
SIGNAL_EXIT_BASE = 128


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name suggests it holds a secret."""
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


def child_env(skill: str, home: str, extra: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The environment of a child, built from an allow-list, never from the worker's environment:
    PATH and LANG of the worker, HOME and TMPDIR in the sandbox, plus `extra`; without any variable
    whose name looks secret. Returns it and the names it dropped."""
    for name in extra:
        if not ENV_NAME_PATTERN.fullmatch(name):
            raise InvalidInputError(f"{skill}: 'env' has an invalid variable name {name!r}")
        if name.upper() in RESERVED_ENV_NAMES or name.upper().startswith(RESERVED_ENV_PREFIXES):
            raise InvalidInputError(f"{skill}: 'env' may not set {name}")
        if "\x00" in extra[name]:
            raise InvalidInputError(f"{skill}: 'env': the value of {name} holds a NUL character")
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "LANG": os.environ.get("LANG") or DEFAULT_LANG,
        "HOME": home,
        "TMPDIR": home,
        **extra,
    }
    dropped = sorted(name for name in env if looks_secret(name))
    return {k: v for k, v in env.items() if k not in dropped}, dropped


@dataclass(frozen=True, slots=True)
class PythonCode:
    """python.exec's run: the launcher runs the code (stdin: a length line, the code, its stdin)."""

    memory_bytes: int
    cpu_s: int
    code_name: str
    memory_exit_code: int


@dataclass(frozen=True, slots=True)
class ProcessRun:
    """What to run and under which limits."""

    skill: str
    what: str  # how messages name the process: "'make'", "the code"
    argv: list[str]
    executable: str
    cwd: str
    env: dict[str, str]
    stdin: bytes | None
    timeout_s: float | None
    max_output_bytes: int
    # The one directory the run may write (its quota is checked after the run); None: none.
    workspace: str | None = None
    # More paths the run must see inside bwrap (the program, a skill's folder), read-only.
    read_only: tuple[str, ...] = ()
    python: PythonCode | None = None


@dataclass(slots=True)
class _RunState:
    """What the watchdog found."""

    limit_exceeded: str | None = None


async def run_process(run: ProcessRun, isolation: Isolation) -> dict[str, Any]:
    """Run the child to its end; returns {exit_code, stdout, stderr, stdout_truncated,
    stderr_truncated, duration_s, limit_exceeded}. A negative exit code is the signal that ended it;
    `limit_exceeded` is "memory" or "processes" when the run went over `tools.task_memory_mb` or
    `tools.task_max_processes`. Raises ToolTimeoutError past `timeout_s`; every process of the run is
    killed and reaped in every case."""
    settings = isolation.settings
    run = _absolute(run)
    mode = await isolation.mode()
    isolation.protect_worker(mode)
    cgroup = await _make_cgroup(isolation)
    status_read, status_write = os.pipe()
    try:
        try:
            launch = _launch(run, isolation, mode, cgroup, status_write)
        except BaseException:
            os.close(status_write)
            raise
        result = await _run(run, launch, settings, status_read, status_write)  # closes status_write
    finally:
        os.close(status_read)
        if cgroup is not None:
            await asyncio.to_thread(cgroup.remove)
    if run.workspace is not None:
        await asyncio.to_thread(check_workspace_after_run, run.skill, run.workspace, settings.workspace_max_bytes)
    return result


def _absolute(run: ProcessRun) -> ProcessRun:
    """`run` with absolute paths: inside bwrap the launcher enters its directory by name."""
    return dataclasses.replace(run, cwd=os.path.realpath(run.cwd), executable=os.path.abspath(run.executable))


async def _make_cgroup(isolation: Isolation) -> RunCgroup | None:
    parents = await isolation.cgroup_parents()
    if parents is None:
        return None
    settings = isolation.settings
    try:
        return await asyncio.to_thread(
            RunCgroup.create, parents, settings.task_memory_mb * MIB, settings.task_max_processes
        )
    except OSError as exc:
        log.warning("tool.cgroup_failed", error=exc.strerror or str(exc), fallback="watchdog")
        return None


def _launch(run: ProcessRun, isolation: Isolation, mode: str, cgroup: RunCgroup | None, status_fd: int) -> Launch:
    settings = isolation.settings
    code = run.python
    limits = {
        "core": 0,
        "fsize": settings.write_max_bytes,
        "cpu": code.cpu_s if code else None,
        "as": code.memory_bytes if code else None,
    }
    params: dict[str, object] = {
        "mode": "python" if code else "exec",
        "executable": _relative_to(run.executable, run.cwd),
        "status_fd": status_fd,
        "limits": limits,
        "code_name": code.code_name if code else None,
        "memory_exit_code": code.memory_exit_code if code else None,
    }
    return isolation.launch(
        "bwrap" if mode == "bwrap" else "none",
        python=code is not None,
        cwd=run.cwd,
        writable=run.workspace,
        read_only=(*run.read_only, run.executable) if code is None else run.read_only,
        cgroup=cgroup,
        params=params,
        argv=[] if code else run.argv,
    )


def _relative_to(executable: str, cwd: str) -> str:
    """A program inside the working directory is run as ./name: a sandbox user may search the
    working directory without being able to search every parent of it."""
    if os.path.realpath(os.path.dirname(executable)) == cwd:
        return f"./{os.path.basename(executable)}"
    return executable


async def _run(
    run: ProcessRun, launch: Launch, settings: ToolSettings, status_read: int, status_write: int
) -> dict[str, Any]:
    """Start the launcher (passing it `status_write`, which is closed here once it has started),
    wait for it, and end the run."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        transport, child = await loop.subprocess_exec(
            lambda: _Child(run.max_output_bytes),
            *launch.argv,
            executable=launch.executable,
            stdin=subprocess.PIPE if run.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=run.cwd,
            env=run.env,
            start_new_session=True,
            pass_fds=(status_write,),
        )
    except OSError as exc:
        raise PermanentError(f"{run.skill}: cannot start {run.what}: {exc.strerror or exc}") from None
    finally:
        os.close(status_write)
    state = _RunState()
    watchdog = asyncio.ensure_future(_watch(transport, launch, settings, state))
    try:
        _feed(transport, run.stdin)
        async with asyncio.timeout(run.timeout_s):
            await child.exited.wait()
    except TimeoutError:
        raise ToolTimeoutError(
            f"{run.skill}: {run.what} ran past its timeout of {run.timeout_s:g} s and was killed with all its processes"
        ) from None
    finally:
        watchdog.cancel()
        await _end(transport, child, launch, watchdog)
    exit_code, cannot_start = _outcome(status_read, transport.get_returncode(), launch)
    if cannot_start is not None:
        raise PermanentError(f"{run.skill}: cannot start {run.what}: {cannot_start}")
    return {
        "exit_code": exit_code,
        "stdout": child.stdout.text(),
        "stderr": child.stderr.text(),
        "stdout_truncated": child.stdout.truncated,
        "stderr_truncated": child.stderr.truncated,
        "duration_s": round(loop.time() - started, 3),
        "limit_exceeded": state.limit_exceeded or _cgroup_limit(launch.cgroup),
    }


def _outcome(status_read: int, returncode: int | None, launch: Launch) -> tuple[int, str | None]:
    """The exit code (negative: the signal) and, if the program could not start, why. The launcher's
    status line is exact; without one (the launcher was killed) the return code is used."""
    os.set_blocking(status_read, False)
    try:
        lines = os.read(status_read, 65536).decode(errors="replace").splitlines()
    except BlockingIOError:
        lines = []
    cannot_start = next((line.split(" ", 2)[-1] for line in lines if line.startswith("error ")), None)
    for line in reversed(lines):
        kind, _, number = line.partition(" ")
        if kind == "exit" and number.isdigit():
            return int(number), cannot_start
        if kind == "signal" and number.isdigit():
            return -int(number), cannot_start
    code = returncode if returncode is not None else -signal.SIGKILL
    if launch.mode == "bwrap" and code > SIGNAL_EXIT_BASE:
        code = SIGNAL_EXIT_BASE - code  # bwrap reports a signal N as 128 + N
    return code, cannot_start


def _cgroup_limit(cgroup: RunCgroup | None) -> str | None:
    if cgroup is None:
        return None
    if cgroup.oom_kills():
        return "memory"
    if cgroup.forks_refused():
        return "processes"
    return None


async def _watch(
    transport: asyncio.SubprocessTransport, launch: Launch, settings: ToolSettings, state: _RunState
) -> None:
    """Every watch interval: is the tree over its memory or process limit? If so, kill it."""
    while transport.get_returncode() is None:
        await asyncio.sleep(settings.sandbox_watch_interval_s)
        verdict = await asyncio.to_thread(_over_limit, transport.get_pid(), launch, settings)
        if verdict is not None and transport.get_returncode() is None:
            state.limit_exceeded = verdict
            log.warning("tool.limit_exceeded", limit=verdict, pid=transport.get_pid())
            await asyncio.to_thread(_kill_run, transport, launch)
            return


def _over_limit(pid: int, launch: Launch, settings: ToolSettings) -> str | None:
    if launch.cgroup is not None:
        # The kernel holds both limits; an OOM kill leaves the rest of the tree running: end it.
        return "memory" if launch.cgroup.oom_kills() else None
    tree = [pid, *process_tree.descendants(pid)]
    now = process_tree.usage(tree)
    if now.memory_bytes > settings.task_memory_mb * MIB:
        return "memory"
    if now.processes - launch.helpers > settings.task_max_processes:
        return "processes"
    return None


def _kill_run(transport: asyncio.SubprocessTransport, launch: Launch) -> None:
    """Kill every process of the run (blocking: in a thread)."""
    if launch.cgroup is not None:
        launch.cgroup.kill_all()
    if transport.get_returncode() is None:  # else its pid may already belong to someone else
        process_tree.kill_tree(transport.get_pid())
    _kill_group(transport.get_pid())


class _Child(asyncio.SubprocessProtocol):
    """Collects the child's output as it arrives and notes when it exits and when its pipes close.

    The exit is its own signal: a background process that keeps the pipes open must not make the
    child look alive (asyncio's `Process.wait()` also waits for the pipes).
    """

    def __init__(self, max_output_bytes: int) -> None:
        self.stdout = _Capture(max_output_bytes)
        self.stderr = _Capture(max_output_bytes)
        self.exited = asyncio.Event()  # the child exited and was reaped
        self.finished = asyncio.Event()  # ... and every pipe is closed

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        capture = self.stdout if fd == 1 else self.stderr
        capture.add(data if isinstance(data, bytes) else data.encode())

    def process_exited(self) -> None:
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.finished.set()


@dataclass(slots=True)
class _Capture:
    """The first `limit` bytes of a stream, and whether there were more."""

    limit: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        if len(chunk) > room:
            self.truncated = True

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@runtime_checkable
class _Writable(Protocol):
    """What feeding stdin needs of a pipe transport.

    A structural check, not `isinstance(pipe, asyncio.WriteTransport)`: uvloop's pipe transports
    (`WriteUnixTransport`) write and close like asyncio's but do not derive from its classes.
    """

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


def _feed(transport: asyncio.SubprocessTransport, data: bytes | None) -> None:
    """Queue the input and close the child's stdin; a child that exits without reading it is fine
    (the pipe transport drops what it cannot write)."""
    pipe = transport.get_pipe_transport(0)
    if pipe is None or data is None:
        return
    if not isinstance(pipe, _Writable):
        raise TypeError(f"the child's stdin is a {type(pipe).__name__}, which cannot be written to")
    pipe.write(data)
    pipe.close()


async def _end(
    transport: asyncio.SubprocessTransport, child: _Child, launch: Launch, watchdog: asyncio.Future[None]
) -> None:
    """Kill every process of the run, then wait until the child is reaped and its pipes are read to
    the end.

    Runs in a `finally`, also while the handler is being cancelled: the work is shielded so that a
    second cancellation cannot cut it short.
    """
    ending = asyncio.ensure_future(_end_shielded(transport, child, launch, watchdog))
    try:
        await asyncio.shield(ending)
    except asyncio.CancelledError:
        await asyncio.wait([ending], timeout=2 * REAP_TIMEOUT_S)
        raise


async def _end_shielded(
    transport: asyncio.SubprocessTransport, child: _Child, launch: Launch, watchdog: asyncio.Future[None]
) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await watchdog
    await asyncio.to_thread(_kill_run, transport, launch)
    try:
        async with asyncio.timeout(REAP_TIMEOUT_S):
            await child.exited.wait()
            await child.finished.wait()
    except TimeoutError:
        log.warning("tool.process_pipes_held", pid=transport.get_pid(), reason="a process of the run got away")
    finally:
        transport.close()


def _kill_group(pgid: int) -> None:
    # The group outlives its leader while any member lives, so this also finds the orphans of a
    # child that already exited. ProcessLookupError: nobody is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
