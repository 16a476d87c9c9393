"""Keeping child processes running: `claw up` and `claw worker start --processes N`.

A skill that segfaults or is OOM-killed takes one process down, not the cluster: the supervisor
starts it again after a backoff (1 s doubling to 30 s, back to 1 s once a process has run for a
minute) and reports each restart. A child keeps its name, and a worker its node id, across restarts.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cli.processes import Child, Launcher
from common.aio import wait_any
from common.log import get_logger

log = get_logger("cli.supervision")

RESTART_BACKOFF_MIN_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
RESTART_RESET_AFTER_S = 60.0
# How often a supervisor looks whether its child is still running.
WATCH_S = 0.25


@dataclass(frozen=True)
class Restart:
    """A child that exited on its own and is started again in `restart_in_s`."""

    name: str
    exit_code: int
    ran_s: float
    restart_in_s: float
    log_path: Path | None

    def describe(self) -> str:
        """One line for people: 'worker-1 exited with code -9; restarting in 1 s (log: ...)'."""
        where = f" (log: {self.log_path})" if self.log_path is not None else ""
        return f"{self.name} exited with code {self.exit_code}; restarting in {self.restart_in_s:g} s{where}"


async def keep_running(
    start: Callable[[], Child], stop: asyncio.Event, on_restart: Callable[[Restart], None], child: Child | None = None
) -> None:
    """Keep one child running until `stop` (`start` starts it; `child` is one already running).

    The caller stops the last child; this only starts them.
    """
    loop = asyncio.get_running_loop()
    backoff_s = RESTART_BACKOFF_MIN_S
    child = child or start()
    started = loop.time()
    while True:
        while child.alive and not stop.is_set():
            await wait_any(stop, timeout_s=WATCH_S)
        if stop.is_set():
            return
        ran_s = loop.time() - started
        if ran_s >= RESTART_RESET_AFTER_S:
            backoff_s = RESTART_BACKOFF_MIN_S
        code = child.returncode
        on_restart(Restart(child.name, -1 if code is None else code, ran_s, backoff_s, child.log_path))
        if await wait_any(stop, timeout_s=backoff_s):
            return
        child = start()
        started = loop.time()
        backoff_s = min(backoff_s * 2, RESTART_BACKOFF_MAX_S)


class WorkerSupervisor:
    """`claw worker start --processes N`: N worker processes `<node>-p1..N`, each restarted if it
    dies. SIGTERM is passed on to every child, which drains gracefully."""

    def __init__(self, *, processes: int, node_id: str, child_args: list[str], nats_url: str, grace_s: float) -> None:
        self.processes = processes
        self.node_id = node_id
        self.child_args = child_args
        self.nats_url = nats_url
        self.grace_s = grace_s
        self.launcher = Launcher()

    async def serve(self, stop: asyncio.Event) -> None:
        """Run the children until `stop`; then stop them all."""
        try:
            async with asyncio.TaskGroup() as tg:
                for index in range(1, self.processes + 1):
                    start = functools.partial(self._start, index)
                    tg.create_task(keep_running(start, stop, self._report), name=f"worker-{index}")
        finally:
            await self.launcher.stop_all_async()

    def _start(self, index: int) -> Child:
        return self.launcher.claw(
            f"worker-{index}",
            "--nats", self.nats_url, "worker", "start", "--node-id", f"{self.node_id}-p{index}", *self.child_args,
            inherit_output=True,
            stop_timeout_s=self.grace_s + 10,
        )  # fmt: skip

    def _report(self, restart: Restart) -> None:
        index = restart.name.removeprefix("worker-")
        log.warning(
            "worker.restart",
            node_id=f"{self.node_id}-p{index}",
            exit_code=restart.exit_code,
            ran_s=round(restart.ran_s, 1),
            restart_in_s=restart.restart_in_s,
        )
