"""The coordinator's hooks in a real coordinator: a feature's listeners and jobs plugged in through
`Coordinator.start(plugins=...)`, failing on purpose, seen through `claw status` as users run it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from common.clock import SYSTEM_CLOCK
from common.config import ClawConfig
from common.states import TaskState
from coordinator.periodic_jobs import PeriodicJob
from coordinator.service import Coordinator
from storage.commits import Committed
from tests.helpers import (
    ProcessPool,
    connected_client,
    eventually,
    running_coordinator,
    running_worker,
    spec,
    wait_nodes_online,
)


class BrokenFeature:
    """A feature whose job and listeners all raise; whatever it breaks must be only itself."""

    def __init__(self) -> None:
        self.job_calls = 0

    def register(self, coordinator: Coordinator) -> None:
        coordinator.jobs.add(PeriodicJob("broken-job", 0.2, self.job))
        coordinator.listeners.add_inline("broken-inline", self.inline)
        coordinator.listeners.add("broken-queued", self.queued)

    async def job(self) -> None:
        self.job_calls += 1
        raise RuntimeError("disk on fire")

    def inline(self, commit: Committed) -> None:
        raise RuntimeError("inline listener bug")

    async def queued(self, commits: Sequence[Committed]) -> None:
        raise RuntimeError("queued listener bug")


async def test_failing_hooks_stop_neither_the_cluster_nor_each_other_and_show_in_claw_status(
    config: ClawConfig, processes: ProcessPool
) -> None:
    feature = BrokenFeature()
    async with (
        running_coordinator(config, plugins=[feature]) as coordinator,
        running_worker(config),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        # Intake, the submit pipeline and the broadcast (`--wait` listens to it) go on.
        submitted = await client.submit_many([spec("echo", {"n": i}) for i in range(5)])
        final = await client.wait([r.task_id for r in submitted], timeout_s=60)
        assert list(final.values()) == [TaskState.SUCCEEDED] * 5
        await eventually(lambda: feature.job_calls >= 3, what="the broken job retried at its interval")

        shown = await asyncio.to_thread(processes.run, "status")
        assert shown.returncode == 0, shown.stderr
        assert "coordinator jobs:" in shown.stdout
        [row] = [line for line in shown.stdout.splitlines() if line.startswith("broken-job")]
        assert "RuntimeError: disk on fire" in row
        assert "broken-inline" in shown.stdout and "inline listener bug" in shown.stdout

        as_json = await asyncio.to_thread(processes.run, "status", "--json")
        status = json.loads(as_json.stdout)
        jobs = {job["name"]: job for job in status["jobs"]}
        assert jobs["broken-job"]["failures"] >= 3
        assert jobs["broken-job"]["last_error"] == "RuntimeError: disk on fire"
        assert jobs["wal-checkpoint"]["runs"] >= 1 and jobs["wal-checkpoint"]["failures"] == 0
        assert jobs["node-liveness"]["failures"] == 0
        listeners = {listener["name"]: listener for listener in status["listeners"]}
        assert listeners["broken-inline"]["failures"] == listeners["broken-inline"]["calls"] >= 2  # every commit
        assert listeners["broken-queued"]["failures"] == listeners["broken-queued"]["calls"] >= 1
        assert listeners["broadcast"]["failures"] == 0 and listeners["broadcast"]["calls"] >= 1
        assert coordinator.jobs.views()[0].name == "wal-checkpoint"


class SlowFeature:
    """A job that runs until released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = False

    def register(self, coordinator: Coordinator) -> None:
        coordinator.jobs.add(PeriodicJob("slow-job", 3600.0, self.job, writes=False))

    async def job(self) -> None:
        self.started.set()
        await self.release.wait()
        self.finished = True


async def test_a_coordinator_stopping_waits_for_its_running_job(config: ClawConfig, tmp_path: Path) -> None:
    feature = SlowFeature()
    coordinator = await Coordinator.start(config, clock=SYSTEM_CLOCK, plugins=[feature])
    stop = asyncio.Event()
    running = asyncio.create_task(coordinator.run(stop))
    try:
        await asyncio.wait_for(feature.started.wait(), 30)
        stop.set()
        done, _ = await asyncio.wait({running}, timeout=1.0)
        assert not done, "the coordinator stopped while one of its jobs was still running"
        feature.release.set()
        await asyncio.wait_for(running, 30)
        assert feature.finished
    finally:
        stop.set()
        feature.release.set()
        await asyncio.wait_for(running, 30)
