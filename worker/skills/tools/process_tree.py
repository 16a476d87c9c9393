"""A tool run's process tree seen from the worker: who is in it, how much memory it holds, and
ending it.

The launcher is a subreaper (launcher.py), so every process of a run stays below the worker's direct
child, even one that called setsid or whose parent exited; the tree is read from the kernel's
`/proc/<pid>/task/<tid>/children` lists, which touch only the tree (not every process on the
machine, as a scan of /proc would). Memory is the sum of PSS (`smaps_rollup`): pages shared by
forked children are counted once, not once per child as RSS would.

Everything here blocks on /proc: call it from a thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass

KILL_ROUNDS = 100
PAGE_KIB = 1024


def descendants(root: int) -> list[int]:
    """Every process below `root` now (not `root` itself)."""
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


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """What a process tree holds at one moment."""

    processes: int
    memory_bytes: int


def usage(pids: list[int]) -> TreeUsage:
    """The number of `pids` alive and the sum of their proportional set sizes."""
    alive = 0
    total_kib = 0
    for pid in pids:
        kib = _pss_kib(pid)
        if kib is not None:
            alive += 1
            total_kib += kib
    return TreeUsage(processes=alive, memory_bytes=total_kib * PAGE_KIB)


def _pss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as file:
            for line in file:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return 0  # a zombie: alive in name, holding nothing


def kill_tree(root: int) -> None:
    """SIGKILL every process below `root`, until none is left, then `root` (which its own parent,
    the worker, reaps). Children are killed before `root` so that none is orphaned out of reach."""
    for _ in range(KILL_ROUNDS):
        below = descendants(root)
        if not below:
            break
        for pid in below:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(root, signal.SIGKILL)
