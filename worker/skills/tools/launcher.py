"""The launcher of every tool process: the first program of a shell.exec, python.exec or `command:`
skill run, and the parent of the task's code.

The worker runs it as `python -I [-S] <this file> <params json> [argv...]`, directly or inside
bwrap (isolation.py), so it imports nothing but the standard library. It

1. joins the run's cgroups (writes 0 - itself - to each `cgroup.procs`), so that every process the
   task starts is counted against the run's memory and process limits;
2. becomes a child subreaper (PR_SET_CHILD_SUBREAPER): a process that calls setsid, double-forks or
   is started with `nohup ... &` still has the launcher as an ancestor, so none escapes the kill;
3. forks the task's process, which lowers its own limits (no core files, file size, and for
   python.exec CPU time and address space), drops to the sandbox user when started as root, sets
   no_new_privs (no setuid program can give privileges back), closes every inherited descriptor and
   then runs the program (`exec` mode) or the code (`python` mode, in the forked interpreter itself);
4. waits; when the task's process ends, kills every process left in its tree, reaps them, and writes
   how the process ended to the status descriptor the worker passed ("exit N" or "signal N"; "error
   ERRNO TEXT" when the program could not be started). bwrap turns a signal into the exit code
   128+N; the status line keeps it exact.

When the worker dies, the launcher gets SIGTERM (PR_SET_PDEATHSIG) and ends the tree the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import linecache
import os
import resource
import signal
import sys
import traceback
import types
from typing import Any, NoReturn

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
OOM_SCORE_ADJ_MAX = "1000"
EXIT_CANNOT_START = 127
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main() -> None:
    """Read the parameters, set up, fork the task's process and supervise it (never returns)."""
    params: dict[str, Any] = json.loads(sys.argv[1])
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    for procs in params["cgroup_procs"]:
        with open(procs, "w") as file:
            file.write("0")
    _prctl(libc, PR_SET_CHILD_SUBREAPER, 1)
    if params["parent_death"]:
        _prctl(libc, PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the worker died before the line above
            os._exit(128 + signal.SIGTERM)
    source = _read_code() if params["mode"] == "python" else None
    for number in ENDING_SIGNALS:
        signal.signal(number, _end_tree)
    child = os.fork()
    if child == 0:
        _run_task(params, libc, source)
    _supervise(child, params["status_fd"])


def _prctl(libc: Any, option: int, value: int) -> None:
    if libc.prctl(option, value, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl({option}): {os.strerror(code)}")


def _read_code() -> str:
    """The code, behind a length line on stdin; what follows is the code's own stdin (the forked
    process inherits this reader's buffer)."""
    size = int(sys.stdin.buffer.readline())
    return sys.stdin.buffer.read(size).decode("utf-8")


# --- the task's process --------------------------------------------------------------------------


def _run_task(params: dict[str, Any], libc: Any, source: str | None) -> NoReturn:
    """In the forked child: confine this process, then become the task's program or run its code."""
    status_fd = params["status_fd"]
    step = "set-up"
    try:
        for number in ENDING_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        step = "limits"
        _set_limits(params["limits"])
        _raise_oom_score()
        step = "the sandbox user"
        _drop_privileges(params.get("uid"), params.get("gid"))
        if params["chdir"] is not None:
            step = f"entering {params['chdir']}"
            os.chdir(params["chdir"])
            os.environ.pop("PWD", None)  # bwrap sets it to where it started, not here
        step = "no_new_privs"
        _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
        step = "the program"
        if params["mode"] == "python":
            os.closerange(3, _max_fd())
            assert source is not None
            _run_code(source, params["code_name"], params["memory_exit_code"])
        os.set_inheritable(status_fd, False)  # closed by a successful exec, kept to report a failure
        os.closerange(3, status_fd)
        os.closerange(status_fd + 1, _max_fd())
        # Python ignores these two; a program expects their default actions (as subprocess restores).
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        argv = sys.argv[2:]
        os.execve(params["executable"], argv, os.environ)  # noqa: S606 - an argv list, never a shell
    except OSError as exc:
        reason = exc.strerror or str(exc)
        _report(status_fd, f"error {exc.errno or 0} {reason if step == 'the program' else f'{step}: {reason}'}")
    except BaseException as exc:  # noqa: BLE001 - whatever stops the set-up is reported, not raised
        _report(status_fd, f"error 0 {step}: {type(exc).__name__}: {exc}")
    os._exit(EXIT_CANNOT_START)


def _set_limits(limits: dict[str, int | None]) -> None:
    names = {"core": resource.RLIMIT_CORE, "fsize": resource.RLIMIT_FSIZE, "cpu": resource.RLIMIT_CPU}
    names["as"] = resource.RLIMIT_AS
    for name, value in limits.items():
        if value is None:
            continue
        which = names[name]
        soft, hard = value, value + 1 if name == "cpu" else value  # SIGXCPU first, SIGKILL a second later
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(which, (soft, hard))


def _raise_oom_score() -> None:
    """If the machine runs out of memory, the task's processes go before the worker."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as file:
        file.write(OOM_SCORE_ADJ_MAX)


def _drop_privileges(uid: int | None, gid: int | None) -> None:
    """Become the sandbox user for good (real, effective and saved ids), with no extra groups."""
    if uid is None or gid is None or os.getuid() != 0:
        return
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise OSError(errno.EPERM, "the sandbox user could not be taken")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise OSError(errno.EPERM, "root could be taken back after dropping it")


def _max_fd() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if 0 < soft < 1 << 20 else 1 << 20


def _run_code(source: str, code_name: str, memory_exit_code: int) -> NoReturn:
    """Run the code as __main__ in a namespace of its own; a traceback shows the code's frames only.
    (What it needs is imported at the start: the sandbox user may not be able to read the
    interpreter's files.)"""
    linecache.cache[code_name] = (len(source), None, source.splitlines(True), code_name)
    sys.argv = [code_name]
    # A module of its own: the launcher's functions keep theirs (their globals are the old __main__).
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    try:
        exec(compile(source, code_name, "exec"), main.__dict__)  # noqa: S102 - running the task's code is the job
    except MemoryError:
        sys.stderr.write("\nMemoryError: python.exec stopped at its memory limit (tools.python_memory_mb)\n")
        _exit_flushed(memory_exit_code)
    except SystemExit as exc:
        _exit_flushed(_system_exit_code(exc))
    except KeyboardInterrupt:
        _exit_flushed(128 + signal.SIGINT)
    except BaseException as exc:  # noqa: BLE001 - the code's own exception: print it as Python would
        frames = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        traceback.print_exception(type(exc), exc, frames)
        _exit_flushed(1)
    _exit_flushed(0)


def _system_exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    sys.stderr.write(f"{exc.code}\n")
    return 1


def _exit_flushed(code: int) -> NoReturn:
    """Exit as Python would at the end of a script: flush the streams, run no atexit of the launcher."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


# --- the supervisor ------------------------------------------------------------------------------


def _supervise(child: int, status_fd: int) -> NoReturn:
    """Reap until the task's process ends, then end its whole tree and report how it ended."""
    status: int | None = None
    while True:
        if status is not None:
            _kill_descendants()
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child:
            status = wait_status
    if status is None:  # cannot happen: the child was ours
        os._exit(EXIT_CANNOT_START)
    if os.WIFSIGNALED(status):
        _report(status_fd, f"signal {os.WTERMSIG(status)}")
        _die_like(os.WTERMSIG(status))
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else EXIT_CANNOT_START
    _report(status_fd, f"exit {code}")
    os._exit(code)


def _end_tree(signum: int, frame: object) -> None:
    """SIGTERM, SIGINT or SIGHUP to the launcher (the worker died): end the tree, then go."""
    while True:
        _kill_descendants()
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    os._exit(128 + signum)


def _kill_descendants() -> None:
    """SIGKILL every process below this one. Orphans of the tree are reparented to this subreaper,
    so a process started after this pass is a child of one it killed and is found on the next."""
    for pid in _descendants(os.getpid()):
        # Gone already; or not ours to kill, which the worker's own kill then covers.
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _descendants(root: int) -> list[int]:
    found: list[int] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as file:
                    children = [int(word) for word in file.read().split()]
            except OSError:
                continue
            found.extend(children)
            pending.extend(children)
    return found


def _report(status_fd: int, line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(status_fd, f"{line}\n".encode())


def _die_like(signum: int) -> NoReturn:
    """End with the task's signal (no core file), so a plain wait on the launcher sees it too."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)


if __name__ == "__main__":
    main()
