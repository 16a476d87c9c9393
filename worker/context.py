"""The context a skill handler receives with its input.

`progress` and `log` never block the handler: they queue an event for the worker's reporter, which
publishes it to the task's event subject in order. They are plain methods, safe to call from async
handlers and from sync handlers running in a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import structlog
from opentelemetry.trace import Span

from common.clock import Clock
from common.events import TaskEvent, TaskLog, TaskProgress
from common.ids import new_id
from common.states import Priority
from common.tracing import tracer

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(slots=True)
class TaskContext:
    """Who is running (task, attempt, node) and how to report while running."""

    task_id: str
    skill: str
    attempt: int
    max_attempts: int
    priority: Priority
    node_id: str
    timeout_s: float
    _emit: Callable[[TaskEvent], None] = field(repr=False)
    _clock: Clock = field(repr=False)

    def progress(self, percent: float | None = None, message: str = "") -> None:
        """Report how far the task got (0-100, or None if unknown) with a short message."""
        if percent is not None:
            percent = max(0.0, min(100.0, float(percent)))
        self._emit(
            TaskProgress(
                event_id=new_id(),
                task_id=self.task_id,
                attempt=self.attempt,
                node_id=self.node_id,
                at=self._clock.now(),
                percent=percent,
                message=message,
            )
        )

    def span(self, name: str, **attributes: str | int | float | bool) -> AbstractContextManager[Span]:
        """A child span of this attempt's span, for the handler's own steps (`with ctx.span("fetch"):`)."""
        return tracer().start_as_current_span(name, attributes=attributes)

    def log(self, message: str, level: str = "info") -> None:
        """Add a line to the task's execution log (and to the worker's own log)."""
        level = level if level in LOG_LEVELS else "info"
        structlog.get_logger("skill").log(_LEVEL_NUMBERS[level], message, task_id=self.task_id, skill=self.skill)
        self._emit(
            TaskLog(
                event_id=new_id(),
                task_id=self.task_id,
                attempt=self.attempt,
                node_id=self.node_id,
                at=self._clock.now(),
                level=level,
                message=message,
            )
        )


_LEVEL_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
