"""Alerts on recent outcomes: the completion and failure rates of the tasks that finished lately.

The periodic job `alerts` calls `evaluate` every `alert_interval_s`. It counts the tasks that finished
in the last `alert_window_s` (from SQLite: `TaskStatistics.window_stats`) and, once at least
`alert_min_tasks` finished - one failure out of one task pages nobody - compares:

- `completion_rate` fires while succeeded / finished < `alert_min_completion`;
- `failure_rate` fires while (failed + dead) / finished > `alert_max_failure`.

A rate equal to its threshold does not fire. An alert that starts is recorded in the event log as
`alert.<name>`, one that ends as `alert.resolved` - both under the pseudo task id `cluster:alerts`, so
they are hash-chained with everything else - and announced once committed, by the after-commit
listener `announce` (a warning or an info line in the log; where a notifier would plug in). Too few
finished tasks ends an alert too: there is nothing left to judge. Active alerts are restored from the
event log at start-up, so a restarted coordinator neither repeats a start nor forgets to record the
end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from common.clock import Clock
from common.config import CoordinatorSettings
from common.errors import StorageError
from common.event_kinds import EventKind
from common.log import get_logger
from common.models import AlertView, WindowStats
from storage.commits import Committed
from storage.records import EventRecord, WriteBatch
from storage.task_queries import TaskQueries
from storage.task_stats import TaskStatistics
from storage.task_writer import TaskWriter

log = get_logger("coordinator.alerts")

ALERTS_TASK_ID = "cluster:alerts"
COMPLETION_RATE = "completion_rate"
FAILURE_RATE = "failure_rate"
ALERT_NAMES = (COMPLETION_RATE, FAILURE_RATE)
FIRING_KINDS = frozenset(EventKind.alert(name) for name in ALERT_NAMES)
# Newest alert events read at start-up to find each alert's last word.
RESTORE_SCAN = 200


class _AlertData(msgspec.Struct, kw_only=True):
    """The `data` of an alert event (what restoring reads back)."""

    alert: str
    rate: float | None = None
    threshold: float = 0.0
    window_s: float = 0.0
    finished: int = 0
    message: str = ""


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    threshold: float
    # (rate, threshold) -> whether the alert fires
    fires: Callable[[float, float], bool]
    rate_of: Callable[[WindowStats], float | None]
    describe: Callable[[WindowStats, float, float], str]


def _pct(value: float) -> str:
    return f"{value * 100:.1f} %"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _completion_text(stats: WindowStats, rate: float, threshold: float) -> str:
    succeeded = stats.by_state.get("succeeded", 0)
    return (
        f"completion rate {_pct(rate)} is below {_pct(threshold)}: {succeeded} of the {stats.finished} tasks "
        f"that finished in the last {_span(stats.window_s)} succeeded"
    )


def _failure_text(stats: WindowStats, rate: float, threshold: float) -> str:
    failed = stats.by_state.get("failed", 0) + stats.by_state.get("dead", 0)
    return (
        f"failure rate {_pct(rate)} is above {_pct(threshold)}: {failed} of the {stats.finished} tasks "
        f"that finished in the last {_span(stats.window_s)} failed"
    )


class AlertMonitor:
    """Judges the recent window against the thresholds; records alerts that start and end."""

    def __init__(
        self,
        writer: TaskWriter,
        queries: TaskQueries,
        stats: TaskStatistics,
        settings: CoordinatorSettings,
        clock: Clock,
    ) -> None:
        self._writer = writer
        self._queries = queries
        self._stats = stats
        self._settings = settings
        self._clock = clock
        self._rules = (
            _Rule(
                COMPLETION_RATE,
                settings.alert_min_completion,
                lambda rate, threshold: rate < threshold,
                lambda stats: stats.completion_rate,
                _completion_text,
            ),
            _Rule(
                FAILURE_RATE,
                settings.alert_max_failure,
                lambda rate, threshold: rate > threshold,
                lambda stats: stats.failure_rate,
                _failure_text,
            ),
        )
        self._active: dict[str, AlertView] = {}

    async def load(self) -> None:
        """Restore the alerts that were firing when the coordinator last stopped."""
        seen: set[str] = set()
        for event in await self._queries.recent_events(ALERTS_TASK_ID, limit=RESTORE_SCAN):
            try:
                data = msgspec.json.decode(bytes(event.data), type=_AlertData)
            except msgspec.DecodeError:
                continue
            if data.alert in seen:
                continue
            seen.add(data.alert)
            if event.kind == f"alert.{data.alert}" and data.rate is not None:
                self._active[data.alert] = AlertView(
                    name=data.alert,
                    message=data.message,
                    rate=data.rate,
                    threshold=data.threshold,
                    window_s=data.window_s,
                    finished=data.finished,
                    since=event.at,
                )

    def active(self) -> list[AlertView]:
        """The alerts firing now, by name."""
        return [self._active[name] for name in sorted(self._active)]

    def firing(self) -> dict[str, bool]:
        """Every alert's name -> whether it fires (for the `claw_alert_active` gauge)."""
        return {name: name in self._active for name in ALERT_NAMES}

    async def window_stats(self, window_s: float) -> WindowStats:
        """The tasks that finished in the last `window_s` seconds: what alerts are judged on."""
        return await self._stats.window_stats(since=self._clock.now() - window_s, window_s=window_s)

    async def evaluate(self) -> list[AlertView]:
        """Judge the alert window now; record alerts that start or end. Returns the active alerts.

        A database that refuses the write leaves the alerts as they were, so the next call records
        the change again.
        """
        try:
            stats = await self.window_stats(self._settings.alert_window_s)
        except StorageError as exc:
            log.error("alerts.evaluate_failed", error=str(exc))
            return self.active()
        now = self._clock.now()
        judged = stats.finished >= self._settings.alert_min_tasks
        active = dict(self._active)
        changes: list[tuple[EventKind, AlertView]] = []
        for rule in self._rules:
            rate = rule.rate_of(stats)
            if judged and rate is not None and rule.fires(rate, rule.threshold):
                started = active.get(rule.name)
                since = now if started is None else started.since
                active[rule.name] = self._view(rule, stats, rate, since=since, firing=True)
                if started is None:
                    changes.append((EventKind.alert(rule.name), active[rule.name]))
            elif rule.name in active:
                ended = active.pop(rule.name)
                resolved = self._view(rule, stats, rate, since=ended.since, firing=False)
                changes.append((EventKind.ALERT_RESOLVED, resolved))
        if changes:
            try:
                await self._writer.write_batch(WriteBatch(events=[_event(kind, view, now) for kind, view in changes]))
            except StorageError as exc:
                log.error("alerts.record_failed", error=str(exc))
                return self.active()
        self._active = active
        return self.active()

    def _view(self, rule: _Rule, stats: WindowStats, rate: float | None, *, since: float, firing: bool) -> AlertView:
        window, label = _span(stats.window_s), rule.name.replace("_", " ")
        if firing and rate is not None:
            message = rule.describe(stats, rate, rule.threshold)
        elif rate is None:
            message = f"no task finished in the last {window}"
        elif stats.finished < self._settings.alert_min_tasks:
            message = (
                f"only {stats.finished} task(s) finished in the last {window}, fewer than the "
                f"{self._settings.alert_min_tasks} needed to judge the {label}"
            )
        else:
            message = f"{label} {_pct(rate)} is within {_pct(rule.threshold)} again over the last {window}"
        return AlertView(
            name=rule.name,
            message=message,
            rate=0.0 if rate is None else rate,
            threshold=rule.threshold,
            window_s=stats.window_s,
            finished=stats.finished,
            since=since,
        )


def announce(commit: Committed) -> None:
    """After-commit listener (inline): log each alert that a commit recorded as started or ended."""
    for event in commit.events:
        # Every commit passes here: the task id (a plain str) rules out a task's row cheaply.
        if event.task_id == ALERTS_TASK_ID and (event.kind in FIRING_KINDS or event.kind == EventKind.ALERT_RESOLVED):
            _log(event)


def _event(kind: EventKind, view: AlertView, at: float) -> EventRecord:
    data = {
        "alert": view.name,
        "rate": round(view.rate, 6),
        "threshold": view.threshold,
        "window_s": view.window_s,
        "finished": view.finished,
        "message": view.message,
    }
    return EventRecord.of(kind, ALERTS_TASK_ID, at, data=data)


def _log(event: EventRecord) -> None:
    data = msgspec.json.decode(event.data or "{}", type=_AlertData)
    fields = {
        "alert": data.alert,
        "rate": round(data.rate or 0.0, 4),
        "threshold": data.threshold,
        "window_s": data.window_s,
        "finished": data.finished,
    }
    if event.kind == EventKind.ALERT_RESOLVED:
        log.info("alert.resolved", **fields, message=data.message)
    else:
        log.warning("alert.firing", **fields, message=data.message)
