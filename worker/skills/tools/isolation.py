"""How tool processes are confined: which user they run as, in which namespaces, under which cgroup.

- **User.** A worker running as root starts its tool processes as `tools.sandbox_user` (nobody by
  default; never root): they cannot read the worker's /proc (environment, open files, memory) nor
  any file only root may read. A worker running as another user cannot switch users: its tool
  processes run as itself, and only the namespaces below keep them from its /proc.
- **Namespaces.** Where bubblewrap (`bwrap`) works, every tool process runs inside it: its own PID
  namespace (it sees only its own tree; the tree dies with it), mount namespace (a read-only view of
  the system's /usr, a few /etc files and the Python installation, a fresh /tmp, and the one
  workspace it may write), IPC, UTS and - unless `tools.sandbox_network` - network namespace (its
  own loopback only: no NATS, no metadata service, no internet). Root workers run bwrap as root,
  which needs no user namespace; the launcher inside drops to the sandbox user. Other workers need
  unprivileged user namespaces (bwrap makes one).
- **cgroups.** Where the worker may make a cgroup, each run gets one (cgroups.py); elsewhere a
  watchdog in the worker (processes.py) holds the same limits by killing the tree.

What is available is found out once per process, on first use, by trying it.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from common.config import ToolSettings
from common.errors import ConfigError, PermanentError
from common.log import get_logger
from worker.skills.tools.cgroups import CgroupParents, RunCgroup

log = get_logger("worker.skills.tools")

LAUNCHER = str(Path(__file__).resolve().parent / "launcher.py")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What programs need of /etc: names, DNS, TLS roots, time zone, the dynamic loader, alternatives.
ETC_ENTRIES = (
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/mime.types",
    "/etc/os-release",
)
CGROUP_MOUNT = "/run/claw-cgroup"
PROBE_TIMEOUT_S = 20.0
PR_SET_DUMPABLE = 4

Mode = Literal["bwrap", "none"]


@dataclass(frozen=True, slots=True)
class SandboxUser:
    """The user tool processes run as (only when the worker runs as root)."""

    uid: int
    gid: int


def sandbox_user(settings: ToolSettings) -> SandboxUser | None:
    """The user to drop to, or None when the worker is not root (it cannot switch users)."""
    if os.geteuid() != 0:
        return None
    name = settings.sandbox_user
    uid_text, colon, gid_text = name.partition(":")
    try:
        if colon:
            user = SandboxUser(int(uid_text), int(gid_text))
        else:
            entry = pwd.getpwnam(name)
            user = SandboxUser(entry.pw_uid, entry.pw_gid)
    except (KeyError, ValueError):
        raise ConfigError(
            f"tools.sandbox_user: {name!r} is neither a user of this machine nor uid:gid; "
            "tool processes of a root worker must run as an unprivileged user"
        ) from None
    if user.uid == 0 or user.gid == 0:
        raise ConfigError(f"tools.sandbox_user: {name!r} is root; tool processes must run as an unprivileged user")
    return user


@dataclass(frozen=True, slots=True)
class Launch:
    """The argv that starts one run, and what the launcher was told."""

    argv: list[str]
    executable: str
    mode: Mode
    cgroup: RunCgroup | None
    helpers: int  # processes of the sandbox itself above the launcher (bwrap's two)


class Isolation:
    """The confinement of the tool processes of one worker, built from its `tools` settings."""

    def __init__(self, settings: ToolSettings) -> None:
        self._settings = settings
        self.user = sandbox_user(settings)
        self._bwrap = shutil.which("bwrap") if settings.sandbox_bwrap != "off" else None
        if settings.sandbox_bwrap == "require" and self._bwrap is None:
            raise ConfigError(
                "tools.sandbox_bwrap is 'require' but bwrap is not installed: "
                "install bubblewrap (apt-get install bubblewrap) or set it to 'auto'"
            )
        self._python = settings.python_executable or sys.executable

    @property
    def settings(self) -> ToolSettings:
        """The tool settings this isolation was built from."""
        return self._settings

    async def mode(self) -> Mode:
        """bwrap where it works here (tried once per process), else none."""
        if self._bwrap is None:
            if self._settings.sandbox_bwrap == "auto" and not _INTERPRETER_CHECKED:
                log.warning("tool.bwrap_missing", detail="tool processes run without namespaces: install bubblewrap")
            self._check_interpreter()
            return "none"
        key = (self._bwrap, self._settings.sandbox_network, os.geteuid())
        if key not in _BWRAP_WORKS:  # two runs starting at once may both try: harmless
            _BWRAP_WORKS[key] = await self._probe_bwrap(self._bwrap)
        if _BWRAP_WORKS[key]:
            return "bwrap"
        self._check_interpreter()
        if self._settings.sandbox_bwrap == "require":
            raise PermanentError(
                "tool processes: tools.sandbox_bwrap is 'require' but bwrap cannot run here (see the worker's log)"
            )
        return "none"

    def _check_interpreter(self) -> None:
        """Without bwrap python.exec's code runs as the sandbox user with the interpreter's files as they
        are: say so once if that user cannot reach them (pyenv under a private /root, say)."""
        if _INTERPRETER_CHECKED:
            return
        _INTERPRETER_CHECKED.append(True)
        if self.user is None:
            return
        install = os.path.dirname(os.path.dirname(os.path.realpath(self._python)))
        if not _others_may_enter(install):
            log.warning(
                "tool.interpreter_unreadable",
                interpreter=self._python,
                detail="the sandbox user cannot read it, so python.exec code cannot import modules; "
                "set tools.python_executable to one it can (e.g. /usr/bin/python3) or install bubblewrap",
            )

    def protect_worker(self, mode: Mode) -> None:
        """Tool processes of the worker's own user outside a PID namespace could read the worker's
        /proc (environment, memory, open files): make the worker non-dumpable, which gives those
        files to root. Once per process; a root worker needs it not (its children are another user)."""
        if mode != "none" or self.user is not None or os.geteuid() == 0 or _PROTECTED:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0:
            _PROTECTED.append(True)
            log.warning(
                "tool.same_user_children",
                detail="tool processes run as the worker's user without bwrap: the worker is made non-dumpable; "
                "its files stay readable to them (docs/Tool_skills.md)",
            )

    async def cgroup_parents(self) -> CgroupParents | None:
        """Where run cgroups can be made, if anywhere (found once per process)."""
        if not self._settings.sandbox_cgroups:
            return None
        if "parents" not in _CGROUPS:
            _CGROUPS["parents"] = await asyncio.to_thread(CgroupParents.find)
            found = _CGROUPS["parents"]
            log.info("tool.cgroups", available=found is not None, memory=str(found.memory) if found else None)
        return _CGROUPS["parents"]

    async def _probe_bwrap(self, bwrap: str) -> bool:
        paths = _python_paths(sys.executable)
        argv = self._bwrap_argv(bwrap, writable=None, read_only=paths, cgroup=None)
        argv += [sys.executable, "-I", "-S", "-c", "pass"]
        try:
            probe = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={}
            )
        except OSError as exc:
            log.warning("tool.bwrap_unusable", bwrap=bwrap, error=str(exc))
            return False
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                _, stderr = await probe.communicate()
        except TimeoutError:
            log.warning("tool.bwrap_unusable", bwrap=bwrap, error=f"no answer within {PROBE_TIMEOUT_S:g} s")
            return False
        finally:
            if probe.returncode is None:  # timed out, or the run was cancelled: leave nothing behind
                probe.kill()
                await asyncio.shield(probe.wait())
        if probe.returncode != 0:
            reason = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["exit code"]
            log.warning("tool.bwrap_unusable", bwrap=bwrap, exit_code=probe.returncode, error=reason[0])
            return False
        log.info("tool.bwrap", bwrap=bwrap, network=self._settings.sandbox_network)
        return True

    def launch(
        self,
        mode: Mode,
        *,
        python: bool,
        cwd: str,
        writable: str | None,
        read_only: tuple[str, ...],
        cgroup: RunCgroup | None,
        params: dict[str, object],
        argv: list[str],
    ) -> Launch:
        """The argv of the launcher (in bwrap or not) for a run."""
        interpreter = self._python if python else sys.executable
        procs = [str(path) for path in cgroup.procs_files()] if cgroup is not None else []
        if mode == "bwrap" and cgroup is not None:
            procs = [f"{CGROUP_MOUNT}/memory/cgroup.procs", f"{CGROUP_MOUNT}/pids/cgroup.procs"]
        user = self.user
        told = {
            **params,
            "cgroup_procs": procs,
            "uid": user.uid if user else None,
            "gid": user.gid if user else None,
            "parent_death": mode == "none",
            # Outside bwrap the launcher starts in `cwd` already (made so by the root worker, which
            # may reach it even where the sandbox user cannot search every parent of it).
            "chdir": cwd if mode == "bwrap" else None,
        }
        launcher = [interpreter, "-I", *([] if python else ["-S"]), LAUNCHER, json.dumps(told), *argv]
        if mode == "none":
            return Launch(argv=launcher, executable=interpreter, mode=mode, cgroup=cgroup, helpers=0)
        assert self._bwrap is not None
        extra = (*read_only, LAUNCHER, *_python_paths(interpreter))
        sandbox = self._bwrap_argv(self._bwrap, writable=writable, read_only=extra, cgroup=cgroup)
        return Launch(argv=[*sandbox, *launcher], executable=self._bwrap, mode=mode, cgroup=cgroup, helpers=2)

    def _bwrap_argv(
        self, bwrap: str, *, writable: str | None, read_only: tuple[str, ...], cgroup: RunCgroup | None
    ) -> list[str]:
        argv = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not self._settings.sandbox_network:
            argv.append("--unshare-net")
        if os.geteuid() == 0:
            # No user namespace: it would map root alone, and the sandbox user could not be taken.
            # The launcher needs to become that user and to kill its processes; nothing else is kept
            # (the task's process loses all three when it becomes the sandbox user).
            argv += ["--cap-drop", "ALL"]
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
        else:
            argv.append("--unshare-user")
        argv += ["--die-with-parent", "--new-session"]
        argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 - the sandbox's own /tmp
        for path in (*SYSTEM_DIRS, *ETC_ENTRIES):
            argv += _mirror(path)
        binds = _read_only_binds((*read_only, *self._settings.sandbox_ro_paths))
        shown = [*binds, writable] if writable is not None else binds
        for directory in _parents(shown):
            # bwrap would make them 0700 (root's): the sandbox user must be able to pass them.
            argv += ["--perms", "0755", "--dir", directory]
        for path in binds:
            argv += ["--ro-bind", path, path]
        if writable is not None:
            argv += ["--bind", writable, writable]
        if cgroup is not None:
            argv += ["--bind", str(cgroup.memory), f"{CGROUP_MOUNT}/memory"]
            argv += ["--bind", str(cgroup.pids), f"{CGROUP_MOUNT}/pids"]
        # No --chdir: bwrap would enter the workspace as root without CAP_DAC_OVERRIDE, which the
        # sandbox user's private workspace refuses; the launcher enters it as that user.
        argv.append("--")
        return argv


_BWRAP_WORKS: dict[tuple[str, bool, int], bool] = {}
_CGROUPS: dict[str, CgroupParents | None] = {}
_PROTECTED: list[bool] = []
_INTERPRETER_CHECKED: list[bool] = []


def _others_may_enter(directory: str) -> bool:
    """Whether a user who is neither owner nor in the group may search `directory` and its parents."""
    path = directory
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        if path in ("/", ""):
            return True
        path = os.path.dirname(path)


def _mirror(path: str) -> list[str]:
    """bwrap arguments showing `path` inside as it is outside (a symlink stays a symlink)."""
    if os.path.islink(path):
        return ["--symlink", os.readlink(path), path]
    if os.path.exists(path):
        return ["--ro-bind", path, path]
    return []


def _read_only_binds(paths: tuple[str, ...]) -> list[str]:
    """The paths to bind (each as named and as its real path), without those the system directories
    or another of them already show; parents come first."""
    candidates = {os.path.abspath(p) for p in paths} | {os.path.realpath(p) for p in paths}
    binds: list[str] = []
    for path in sorted(candidates, key=len):
        if os.path.exists(path) and not _under(path, SYSTEM_DIRS) and not _under(path, tuple(binds)):
            binds.append(path)
    return binds


def _parents(paths: list[str]) -> list[str]:
    """The directories above `paths` that the sandbox must make (not /, /tmp or a system
    directory, nor one inside another bind), shallowest first."""
    made = ("/tmp", "/proc", "/dev", *SYSTEM_DIRS)  # noqa: S108 - paths inside the sandbox
    found: set[str] = set()
    for path in paths:
        parent = os.path.dirname(path)
        while parent not in ("/", "") and parent not in made:
            if not _under(parent, tuple(paths)):
                found.add(parent)
            parent = os.path.dirname(parent)
    return sorted(found, key=lambda p: (p.count("/"), p))


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root + "/") for root in roots if not os.path.islink(root))


def _python_paths(interpreter: str) -> tuple[str, ...]:
    """What an interpreter needs to be visible: its installation, and the worker's environment
    (a virtualenv's packages) when it is the worker's own interpreter."""
    real = os.path.realpath(interpreter)
    install = os.path.dirname(os.path.dirname(real))  # <prefix>/bin/python3.x -> <prefix>
    if real == os.path.realpath(sys.executable):
        return (install, sys.prefix, sys.base_prefix, sys.exec_prefix)
    return (install,)
