"""The coordinator's periodic jobs: one table of (name, interval, function), run by one scheduler.

Each job runs every `interval_s`, counted from the start of its previous run; a run that takes longer
than that is followed at once by the next one, never overlapped by it. Each run is a task of its own,
so a slow job (listing a large artifact store) never delays another (the WAL checkpoint, the node
liveness check). A job that writes waits first until the coordinator's lease allows a write.

A run that raises is logged with its traceback and counted, and the job runs again at its next
interval; a lost lease (`LeaseLostError`) is not a job's failure but the coordinator's, and stops it.
What each job did last (when, how long, its last error, how many runs failed) is in `claw status`.
On shutdown the scheduler starts nothing more and waits for the runs in progress to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from common.aio import wait_any
from common.clock import Clock
from common.errors import LeaseLostError
from common.log import get_logger
from common.models import JobView

log = get_logger("coordinator.jobs")

ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class PeriodicJob:
    """One row of the table: what runs, how often."""

    name: str
    interval_s: float
    run: Callable[[], Awaitable[object]]
    # Delay of the first run after the scheduler starts (0: at once).
    first_after_s: float = 0.0
    # Whether it writes the state database, and so must wait for the lease to allow a write.
    writes: bool = True


@dataclass(slots=True)
class _JobState:
    job: PeriodicJob
    due: float = 0.0
    runs: int = 0
    failures: int = 0
    last_run_at: float | None = None
    last_duration_s: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    task: asyncio.Task[None] | None = None

    def view(self) -> JobView:
        return JobView(
            name=self.job.name,
            interval_s=self.job.interval_s,
            runs=self.runs,
            failures=self.failures,
            last_run_at=self.last_run_at,
            last_duration_s=self.last_duration_s,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            running=self.task is not None,
        )


class JobScheduler:
    """Runs the registered jobs at their intervals until stopped."""

    def __init__(self, clock: Clock, *, writable: Callable[[], Awaitable[None]] | None = None) -> None:
        self._clock = clock
        self._writable = writable
        self._jobs: dict[str, _JobState] = {}
        self._ended = asyncio.Event()

    def add(self, job: PeriodicJob) -> None:
        """Register a job (before `run`); names are unique, intervals positive."""
        if job.name in self._jobs:
            raise ValueError(f"a periodic job called '{job.name}' is registered already")
        if job.interval_s <= 0:
            raise ValueError(f"periodic job '{job.name}': the interval must be positive, not {job.interval_s:g} s")
        self._jobs[job.name] = _JobState(job)

    def views(self) -> list[JobView]:
        """Every job's record, in registration order (for `claw status`)."""
        return [state.view() for state in self._jobs.values()]

    async def run(self, stopping: asyncio.Event) -> None:
        """Start each job when it is due until `stopping` is set; then wait for the runs in progress."""
        start = self._clock.monotonic()
        for state in self._jobs.values():
            state.due = start + state.job.first_after_s
        async with asyncio.TaskGroup() as runs:
            while not stopping.is_set():
                self._ended.clear()
                now = self._clock.monotonic()
                idle = [s for s in self._jobs.values() if s.task is None]
                for state in idle:
                    if now >= state.due:
                        state.task = runs.create_task(self._run(state), name=f"job-{state.job.name}")
                waits = [s.due - now for s in idle if s.task is None]
                await wait_any(stopping, self._ended, timeout_s=max(min(waits, default=60.0), 0.0))

    async def _run(self, state: _JobState) -> None:
        """One run of a job: every failure but a lost lease is its own, logged and counted."""
        job = state.job
        started = self._clock.monotonic()
        try:
            if job.writes and self._writable is not None:
                await self._writable()
            started = self._clock.monotonic()
            state.last_run_at = self._clock.now()
            try:
                await job.run()
            except LeaseLostError:
                raise
            except Exception as exc:
                log.exception("jobs.failed", job=job.name, failures=state.failures + 1, retry_in_s=job.interval_s)
                _count_failure(state, exc)
            state.runs += 1
            state.last_duration_s = self._clock.monotonic() - started
        finally:
            state.due = started + job.interval_s
            state.task = None
            self._ended.set()


def _count_failure(state: _JobState, exc: Exception) -> None:
    state.failures += 1
    state.last_error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
    state.last_error_at = state.last_run_at
