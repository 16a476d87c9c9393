"""The periodic job table: each job at its interval, its failures its own, shutdown awaits its runs."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise

import pytest
from structlog.testing import capture_logs

from common.clock import SYSTEM_CLOCK
from common.errors import LeaseLostError
from common.models import JobView
from coordinator.periodic_jobs import JobScheduler, PeriodicJob
from tests.helpers import eventually


class Running:
    """A scheduler running in this loop; stopped and awaited at the end of the test."""

    def __init__(self, scheduler: JobScheduler) -> None:
        self.scheduler = scheduler
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(scheduler.run(self.stopping))

    def job(self, name: str) -> JobView:
        return next(v for v in self.scheduler.views() if v.name == name)

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
def scheduler() -> JobScheduler:
    return JobScheduler(SYSTEM_CLOCK)


async def test_a_failing_job_is_logged_counted_and_run_again_at_its_interval(scheduler: JobScheduler) -> None:
    starts: list[float] = []

    async def broken() -> None:
        starts.append(time.monotonic())
        raise RuntimeError(f"disk on fire #{len(starts)}")

    scheduler.add(PeriodicJob("broken", 0.1, broken))
    running = Running(scheduler)
    with capture_logs() as logs:
        await eventually(lambda: running.job("broken").failures >= 3, what="three failed runs")
    await running.stop()
    view = running.job("broken")
    assert view.runs == view.failures == len(starts)
    assert view.last_error == f"RuntimeError: disk on fire #{len(starts)}"
    assert view.last_error_at is not None and view.last_duration_s is not None and not view.running
    # Run again at its interval, counted from the previous start: never sooner.
    assert all(b - a >= 0.1 - 0.01 for a, b in pairwise(starts))
    failed = [e for e in logs if e["event"] == "jobs.failed"]
    assert len(failed) >= 3 and all(e["exc_info"] and e["job"] == "broken" for e in failed)
    assert failed[0]["failures"] == 1 and failed[0]["retry_in_s"] == 0.1


async def test_a_slow_job_neither_overlaps_itself_nor_delays_another(scheduler: JobScheduler) -> None:
    release, inside = asyncio.Event(), []
    fast_runs = 0

    async def slow() -> None:
        inside.append(1)
        await release.wait()

    async def fast() -> None:
        nonlocal fast_runs
        fast_runs += 1

    scheduler.add(PeriodicJob("slow", 0.01, slow))
    scheduler.add(PeriodicJob("fast", 0.05, fast))
    running = Running(scheduler)
    await eventually(lambda: fast_runs >= 3, what="the fast job running while the slow one is stuck")
    assert len(inside) == 1 and running.job("slow").running
    release.set()
    await eventually(lambda: running.job("slow").runs >= 2, what="the slow job's next run")
    await running.stop()


async def test_shutdown_awaits_a_running_job(scheduler: JobScheduler) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished = []

    async def long_job() -> None:
        started.set()
        await release.wait()
        finished.append(True)

    scheduler.add(PeriodicJob("long", 60.0, long_job))
    running = Running(scheduler)
    await asyncio.wait_for(started.wait(), 30)
    running.stopping.set()
    done, _ = await asyncio.wait({running.task}, timeout=0.3)
    assert not done, "the scheduler returned while its job was still running"
    release.set()
    await asyncio.wait_for(running.task, 30)
    assert finished == [True]
    assert running.job("long").runs == 1


async def test_a_writing_job_waits_for_the_lease_and_a_reading_one_does_not() -> None:
    writable = asyncio.Event()
    ran: list[str] = []

    async def write() -> None:
        ran.append("writes")

    async def read() -> None:
        ran.append("reads")

    scheduler = JobScheduler(SYSTEM_CLOCK, writable=writable.wait)
    scheduler.add(PeriodicJob("writes", 60.0, write))
    scheduler.add(PeriodicJob("reads", 60.0, read, writes=False))
    running = Running(scheduler)
    await eventually(lambda: "reads" in ran, what="the reading job")
    assert ran == ["reads"]
    writable.set()
    await eventually(lambda: "writes" in ran, what="the writing job, once writes are allowed")
    await running.stop()


async def test_a_lost_lease_is_not_a_job_failure_but_stops_the_scheduler(scheduler: JobScheduler) -> None:
    async def lose() -> None:
        raise LeaseLostError("taken over")

    scheduler.add(PeriodicJob("writer", 0.05, lose))
    with pytest.raises(ExceptionGroup) as raised:
        await asyncio.wait_for(scheduler.run(asyncio.Event()), 30)
    assert raised.group_contains(LeaseLostError)
    assert scheduler.views()[0].failures == 0


async def test_the_first_run_can_wait_one_interval(scheduler: JobScheduler) -> None:
    ran = []

    async def job() -> None:
        ran.append(time.monotonic())

    began = time.monotonic()
    scheduler.add(PeriodicJob("later", 0.2, job, first_after_s=0.2))
    running = Running(scheduler)
    await eventually(lambda: ran, what="the first run")
    await running.stop()
    assert ran[0] - began >= 0.2 - 0.01


def test_names_are_unique_and_intervals_positive(scheduler: JobScheduler) -> None:
    async def job() -> None:
        pass

    scheduler.add(PeriodicJob("alerts", 1.0, job))
    with pytest.raises(ValueError, match="'alerts' is registered already"):
        scheduler.add(PeriodicJob("alerts", 1.0, job))
    with pytest.raises(ValueError, match="must be positive"):
        scheduler.add(PeriodicJob("never", 0.0, job))
