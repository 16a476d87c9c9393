"""The coordinator's Prometheus metrics, and the HTTP server that exposes them at `/metrics`.

Counters and histograms are fed by an inline after-commit listener (`on_commit`), on the event loop,
as each state change is committed: a dict look-up and an increment, no I/O. Gauges are set by the
periodic job `metrics-gauges` (`set_gauges`) from values read on the event loop, so a scrape -
answered by prometheus_client's own thread - only reads numbers: it never calls JetStream or SQLite,
and never touches the loop's state.

Each coordinator has its own `CollectorRegistry` (never the global one), so several coordinators in
one process (the tests) do not share a metric. Counters start from 0 with the process, as Prometheus
expects (`rate()` and `increase()` handle the reset); the persistent totals are the gauge
`claw_tasks{state}`, the database's counts. docs/Monitoring.md describes every metric.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.metrics import MetricWrapperBase

from common.errors import ConfigError
from common.models import QueueDepth
from common.states import TaskState
from storage.commits import Committed

# Agent tasks run from a millisecond (echo) to an hour (a back-test): buckets over that whole range.
DURATION_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
SERVER_STOP_TIMEOUT_S = 5.0

# Final states reached by running: their tasks have a run time.
_RAN = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD})
_RERUNNABLE = frozenset({TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED, TaskState.NEEDS_INPUT})

M = TypeVar("M", bound=MetricWrapperBase)


class ObservedTask(Protocol):
    """What a state change's metrics read of its task (a `TaskRecord` or a committed `TaskImage`)."""

    @property
    def skill(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def attempt_offset(self) -> int: ...
    @property
    def queued_at(self) -> float | None: ...
    @property
    def started_at(self) -> float | None: ...


class _PerSkill(Generic[M]):
    """A metric labelled by skill, with its children cached: the hot path skips `labels()`' checks."""

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[str, M] = {}

    def __call__(self, skill: str) -> M:
        child = self._children.get(skill)
        if child is None:
            child = self._children[skill] = self._metric.labels(skill)
        return child


@dataclass(frozen=True, slots=True)
class GaugeValues:
    """What the maintenance loop read for the gauges; None: not read this time (JetStream away)."""

    tasks_by_state: dict[str, int]
    nodes_online: int
    alerts: dict[str, bool]
    # When the JetStream values were read; None when they could not be.
    updated_at: float | None = None
    queues: list[QueueDepth] | None = None
    dead_letters: int | None = None
    storage_fault: bool = False


class ClusterMetrics:
    """Every metric of one coordinator, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)

        def per_skill(name: str, doc: str) -> _PerSkill[Counter]:
            return _PerSkill(Counter(name, doc, ["skill"], registry=registry))

        self._submitted = per_skill("claw_tasks_submitted_total", "Tasks admitted (accepted by a submit).")
        self._rerun = per_skill("claw_tasks_rerun_total", "Finished tasks run again (task retry, DLQ replay).")
        self._by_state = {
            TaskState.SUCCEEDED: per_skill("claw_tasks_succeeded_total", "Tasks that succeeded."),
            TaskState.FAILED: per_skill("claw_tasks_failed_total", "Tasks that failed for good (dead-lettering off)."),
            TaskState.DEAD: per_skill("claw_tasks_dead_total", "Tasks that failed for good and were dead-lettered."),
            TaskState.CANCELLED: per_skill("claw_tasks_cancelled_total", "Tasks cancelled."),
            TaskState.REJECTED: per_skill("claw_tasks_rejected_total", "Tasks denied by the guard or not approved."),
            TaskState.RETRYING: per_skill("claw_task_retries_total", "Failed attempts followed by another attempt."),
        }
        self._lost = per_skill("claw_task_attempts_lost_total", "Attempts lost with their worker, run again.")
        self._run = _PerSkill(
            Histogram(
                "claw_task_run_seconds",
                "Run time of tasks that ended succeeded, failed or dead: first start to end, retries included.",
                ["skill"],
                buckets=DURATION_BUCKETS_S,
                registry=registry,
            )
        )
        self._queue_wait = _PerSkill(
            Histogram(
                "claw_task_queue_wait_seconds",
                "Time from queued to the start of a task's first attempt.",
                ["skill"],
                buckets=DURATION_BUCKETS_S,
                registry=registry,
            )
        )
        self._tasks = Gauge("claw_tasks", "Tasks in the database by state.", ["state"], registry=registry)
        self._running = Gauge("claw_tasks_running", "Tasks running now.", registry=registry)
        self._queue_depth = Gauge(
            "claw_queue_depth",
            "Task messages waiting to be delivered, per (skill, priority) consumer.",
            ["skill", "priority"],
            registry=registry,
        )
        self._ack_pending = Gauge(
            "claw_queue_ack_pending",
            "Task messages delivered to a worker and not yet acknowledged, per (skill, priority) consumer.",
            ["skill", "priority"],
            registry=registry,
        )
        self._dead_letters = Gauge("claw_dlq_messages", "Messages in the dead-letter stream.", registry=registry)
        self._nodes_online = Gauge("claw_nodes_online", "Worker nodes alive.", registry=registry)
        self._storage_fault = Gauge(
            "claw_storage_fault",
            "1 while the state database refuses writes (disk full, read-only, ...).",
            registry=registry,
        )
        self._alert = Gauge("claw_alert_active", "1 while the alert fires.", ["alert"], registry=registry)
        self._updated = Gauge(
            "claw_gauges_updated_timestamp_seconds",
            "When the JetStream gauges (queues, DLQ) were last read.",
            registry=registry,
        )

    def on_commit(self, commit: Committed) -> None:
        """After-commit listener (inline): count the commit's state changes."""
        for change in commit.transitions():
            event = change.event
            assert event.to_state is not None
            self.observe_transition(change.task, event.from_state, event.to_state, event.at, attempt=event.attempt)

    def observe_transition(
        self,
        record: ObservedTask,
        from_state: TaskState | None,
        to_state: TaskState,
        at: float,
        *,
        attempt: int | None = None,
    ) -> None:
        """Count one state change (`from_state` None: just admitted) of attempt `attempt` (default: the
        record's). Runs on the hot path."""
        skill = record.skill
        if from_state is None:
            self._submitted(skill).inc()
        elif to_state is TaskState.PENDING and from_state in _RERUNNABLE:
            self._rerun(skill).inc()
        counter = self._by_state.get(to_state)
        if counter is not None:
            counter(skill).inc()
        if to_state is TaskState.RUNNING:
            # The first start of a series; later attempts waited for a backoff or a reclaim, not a worker.
            attempts = record.attempts if attempt is None else attempt
            first = attempts == record.attempt_offset + 1 and from_state is TaskState.QUEUED
            if first and record.queued_at is not None:
                self._queue_wait(skill).observe(max(at - record.queued_at, 0.0))
        elif to_state in _RAN and record.started_at is not None:
            self._run(skill).observe(max(at - record.started_at, 0.0))
        elif to_state is TaskState.QUEUED and from_state is TaskState.RUNNING:
            self._lost(skill).inc()

    def set_gauges(self, values: GaugeValues) -> None:
        """Set every gauge from values read on the event loop."""
        for state in TaskState:
            self._tasks.labels(state.value).set(values.tasks_by_state.get(state.value, 0))
        self._running.set(values.tasks_by_state.get(TaskState.RUNNING.value, 0))
        self._nodes_online.set(values.nodes_online)
        self._storage_fault.set(1 if values.storage_fault else 0)
        for name, firing in values.alerts.items():
            self._alert.labels(name).set(1 if firing else 0)
        if values.queues is not None:
            for queue in values.queues:
                self._queue_depth.labels(queue.skill, queue.priority.value).set(queue.pending)
                self._ack_pending.labels(queue.skill, queue.priority.value).set(queue.ack_pending)
        if values.dead_letters is not None:
            self._dead_letters.set(values.dead_letters)
        if values.updated_at is not None:
            self._updated.set(values.updated_at)


class MetricsServer:
    """prometheus_client's HTTP server for one registry, in its own thread, until `stop`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on `host:port` (port 0: a free one); returns the port."""
        try:
            # In a thread: binding resolves `host`, which may block.
            server, self._thread = await asyncio.to_thread(start_http_server, port, host, self._registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                "(coordinator.metrics_port / --metrics-port; 0 picks a free port)"
            ) from None
        self._server = server
        self.port = int(server.server_port)
        return self.port

    async def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None and thread is not None:
            await asyncio.to_thread(_shutdown, server, thread)


def _shutdown(server: WSGIServer, thread: threading.Thread) -> None:
    server.shutdown()  # returns once serve_forever has left its loop
    server.server_close()
    thread.join(SERVER_STOP_TIMEOUT_S)
