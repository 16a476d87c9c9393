"""A cgroup per tool run: the kernel holds the memory and process limits of the run's whole tree.

Only cgroup v1 (the `memory` and `pids` hierarchies) is used, and only where the worker may make a
cgroup: the run's cgroup is made *inside the worker's own* (so it can never escape a limit the
worker itself lives under), as `<own>/claw-<run id>`. The launcher joins it before it forks the
task's process (launcher.py). cgroup v2 is not used yet: a v2 process cannot give its children
controllers of its own cgroup without first moving itself (the "no internal processes" rule), which
is the deployment's business (a delegated slice); there the watchdog (process_tree.py) holds.

Everything here blocks on the file system: call it from a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from common.log import get_logger

log = get_logger("worker.skills.tools")

CONTROLLERS = ("memory", "pids")
KILL_ROUNDS = 100
REMOVE_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class CgroupParents:
    """Where the worker may make run cgroups: its own cgroup in each controller's hierarchy."""

    memory: Path
    pids: Path

    @classmethod
    def find(cls) -> CgroupParents | None:
        """The worker's own v1 memory and pids cgroups if it may make cgroups in both, else None."""
        mounts = _v1_mounts()
        own = _own_cgroups()
        paths: dict[str, Path] = {}
        for controller in CONTROLLERS:
            if controller not in mounts or controller not in own:
                return None
            mount_point, mount_root = mounts[controller]
            relative = os.path.relpath(own[controller], mount_root)
            path = Path(mount_point) if relative == "." else Path(mount_point) / relative
            if not _may_make_cgroups(path):
                return None
            paths[controller] = path
        return cls(memory=paths["memory"], pids=paths["pids"])


@dataclass(frozen=True, slots=True)
class RunCgroup:
    """The cgroups of one run, in the memory and pids hierarchies."""

    memory: Path
    pids: Path

    @classmethod
    def create(cls, parents: CgroupParents, memory_bytes: int, max_processes: int) -> RunCgroup:
        """Make the run's cgroups with their limits (swap included where the kernel accounts it)."""
        name = f"claw-{secrets.token_hex(6)}"
        made = cls(memory=parents.memory / name, pids=parents.pids / name)
        made.memory.mkdir(mode=0o755)
        try:
            made.pids.mkdir(mode=0o755)
            (made.memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            swap = made.memory / "memory.memsw.limit_in_bytes"
            if swap.exists():
                with contextlib.suppress(OSError):
                    swap.write_text(str(memory_bytes))
            (made.pids / "pids.max").write_text(str(max_processes))
        except BaseException:
            made.remove()
            raise
        return made

    def procs_files(self) -> list[Path]:
        """The files the launcher writes itself into."""
        return [self.memory / "cgroup.procs", self.pids / "cgroup.procs"]

    def pids_inside(self) -> list[int]:
        """Every process in the run's cgroups now."""
        found: set[int] = set()
        for procs in self.procs_files():
            with contextlib.suppress(FileNotFoundError):
                found.update(int(line) for line in procs.read_text().split())
        return sorted(found)

    def oom_kills(self) -> int:
        """How many processes of the run the kernel killed for going over the memory limit."""
        try:
            text = (self.memory / "memory.oom_control").read_text()
        except FileNotFoundError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def forks_refused(self) -> int:
        """How many forks the process limit refused."""
        try:
            key, _, value = (self.pids / "pids.events").read_text().partition(" ")
        except FileNotFoundError:
            return 0
        return int(value) if key == "max" else 0

    def kill_all(self) -> None:
        """SIGKILL every process in the run's cgroups until none is left. A process forked while
        a pass runs is in the cgroup too (children inherit it), so the next pass finds it."""
        for _ in range(KILL_ROUNDS):
            pids = self.pids_inside()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        log.warning("tool.cgroup_not_empty", cgroup=str(self.memory), pids=self.pids_inside())

    def remove(self) -> None:
        """Remove the run's cgroups once their last process is gone (reaped by its parent)."""
        deadline = time.monotonic() + REMOVE_WAIT_S
        for path in (self.memory, self.pids):
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        log.warning("tool.cgroup_not_removed", cgroup=str(path), error=exc.strerror)
                        break
                    time.sleep(0.01)


def _v1_mounts() -> dict[str, tuple[str, str]]:
    """controller -> (mount point, root of the mount inside the hierarchy), for v1 hierarchies."""
    found: dict[str, tuple[str, str]] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, extra = before.split(), after.split()
        if len(fields) < 5 or len(extra) < 3 or extra[0] != "cgroup":
            continue
        for option in extra[2].split(","):
            if option in CONTROLLERS:
                found[option] = (_unescape(fields[4]), _unescape(fields[3]))
    return found


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path in that v1 hierarchy."""
    found: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller in CONTROLLERS:
                found[controller] = path
    return found


def _may_make_cgroups(path: Path) -> bool:
    """Whether a cgroup can be made (and removed) under `path`: tried, not guessed."""
    probe = path / f"claw-probe-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
    except OSError:
        return False
    try:
        probe.rmdir()
    except OSError:
        return False
    return True


def _unescape(field: str) -> str:
    """mountinfo escapes spaces, tabs, newlines and backslashes as octal."""
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
