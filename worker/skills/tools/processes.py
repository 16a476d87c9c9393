"""Running a child process for shell.exec and python.exec: scrubbed environment, capped output, and
no process left behind.

The child starts in a session (and process group) of its own. When it exits, runs past its time
limit, or the handler is cancelled (the task's timeout, a worker shutdown), the whole group gets
SIGKILL and the child is reaped, so a background process it started does not outlive the task.
Output is taken as it arrives (a SubprocessProtocol); each stream keeps its first
`max_output_bytes` and the rest is dropped, so a chatty child never blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from common.errors import InvalidInputError, PermanentError, ToolTimeoutError
from common.log import get_logger

log = get_logger("worker.skills.tools")

SECRET_NAME_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "AUTH")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# PATH and HOME are the sandbox's; the loader's variables would let any allowed program load code.
RESERVED_ENV_NAMES = ("PATH", "HOME")
RESERVED_ENV_PREFIXES = ("LD_", "DYLD_")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_LANG = "C.UTF-8"
# After the group is killed its pipes close at once; this only bounds a child that left the group.
REAP_TIMEOUT_S = 5.0


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name suggests it holds a secret."""
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


def child_env(skill: str, home: str, extra: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The environment of a child: PATH and LANG of the worker, HOME in the sandbox, plus `extra`;
    without any variable whose name looks secret. Returns it and the names it dropped."""
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
        **extra,
    }
    dropped = sorted(name for name in env if looks_secret(name))
    return {k: v for k, v in env.items() if k not in dropped}, dropped


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


async def run_process(run: ProcessRun) -> dict[str, Any]:
    """Run the child to its end; returns {exit_code, stdout, stderr, stdout_truncated,
    stderr_truncated, duration_s}. A negative exit code is the signal that ended it. Raises
    ToolTimeoutError past `timeout_s`; the process group is killed and reaped in every case."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        transport, child = await loop.subprocess_exec(
            lambda: _Child(run.max_output_bytes),
            *run.argv,
            executable=run.executable,
            stdin=subprocess.PIPE if run.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=run.cwd,
            env=run.env,
            start_new_session=True,
        )
    except OSError as exc:
        raise PermanentError(f"{run.skill}: cannot start {run.what}: {exc.strerror or exc}") from None
    try:
        _feed(transport, run.stdin)
        async with asyncio.timeout(run.timeout_s):
            await child.exited.wait()
    except TimeoutError:
        raise ToolTimeoutError(
            f"{run.skill}: {run.what} ran past its timeout of {run.timeout_s:g} s and was killed with its process group"
        ) from None
    finally:
        await _kill_and_reap(transport, child)
    return {
        "exit_code": transport.get_returncode(),
        "stdout": child.stdout.text(),
        "stderr": child.stderr.text(),
        "stdout_truncated": child.stdout.truncated,
        "stderr_truncated": child.stderr.truncated,
        "duration_s": round(loop.time() - started, 3),
    }


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


async def _kill_and_reap(transport: asyncio.SubprocessTransport, child: _Child) -> None:
    """SIGKILL the child's process group, then wait until the child is reaped and its pipes are read
    to the end.

    Runs in a `finally`, also while the handler is being cancelled: the kill is synchronous, and the
    wait is shielded so that a second cancellation cannot cut it short.
    """
    _kill_group(transport.get_pid())
    waiting = asyncio.ensure_future(_wait_finished(transport, child))
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:
        await asyncio.wait([waiting], timeout=REAP_TIMEOUT_S)
        raise


async def _wait_finished(transport: asyncio.SubprocessTransport, child: _Child) -> None:
    try:
        async with asyncio.timeout(REAP_TIMEOUT_S):
            await child.finished.wait()
    except TimeoutError:
        log.warning("tool.process_pipes_held", pid=transport.get_pid(), reason="a process left the group")
    finally:
        transport.close()


def _kill_group(pgid: int) -> None:
    # The group outlives its leader while any member lives, so this also finds the orphans of a
    # child that already exited. ProcessLookupError: nobody is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
