"""The context a skill handler receives with its input.

`progress` and `log` never block the handler: they queue an event for the worker's reporter, which
publishes it to the task's event subject in order. They are plain methods, safe to call from async
handlers and from sync handlers running in a thread.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from opentelemetry.trace import Span

from common.clock import Clock
from common.errors import InvalidInputError, PermanentError
from common.events import TaskArtifact, TaskEvent, TaskLog, TaskProgress
from common.ids import new_id
from common.models import ArtifactRef
from common.states import Priority
from common.tracing import tracer
from storage.artifacts import ArtifactStore

LOG_LEVELS = ("debug", "info", "warning", "error")
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9._-][A-Za-z0-9._/-]{0,199}")


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
    _artifacts: ArtifactStore | None = field(default=None, repr=False)
    _artifact_ttl_s: float = field(default=0.0, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    async def put_artifact(
        self, name: str, data: bytes | str | Path, content_type: str = "application/octet-stream"
    ) -> ArtifactRef:
        """Store an output (bytes, text, or a file, streamed) as an artifact of this attempt.

        The store is content-addressed: the same bytes are stored once, however many tasks produce
        them. `claw artifacts list|get` finds it by the task and `name`.
        """
        if self._artifacts is None:
            raise PermanentError("this worker has no artifact store configured")
        if not ARTIFACT_NAME.fullmatch(name):
            raise InvalidInputError(f"artifact name {name!r}: use letters, digits, '.', '_', '-' and '/' (200 at most)")
        if isinstance(data, str):
            stored = await self._artifacts.put_bytes(bytes(data, "utf-8"), content_type)
        elif isinstance(data, bytes):
            stored = await self._artifacts.put_bytes(data, content_type)
        else:
            stored = await self._artifacts.put_file(data, content_type)
        ref = ArtifactRef(
            name=name,
            sha256=stored.sha256,
            size=stored.size,
            content_type=content_type,
            backend=stored.backend,
            key=stored.key,
        )
        now = self._clock.now()
        expires = now + self._artifact_ttl_s if self._artifact_ttl_s else None
        self._emit(
            TaskArtifact(
                event_id=new_id(),
                task_id=self.task_id,
                attempt=self.attempt,
                node_id=self.node_id,
                at=now,
                ref=ref,
                expires_at=expires,
            )
        )
        return ref

    def put_artifact_blocking(
        self, name: str, data: bytes | str | Path, content_type: str = "application/octet-stream"
    ) -> ArtifactRef:
        """`put_artifact` for a sync handler (it runs in a thread; this waits on the worker's loop)."""
        if self._loop is None:
            raise PermanentError("put_artifact_blocking is for sync handlers running on a worker")
        return asyncio.run_coroutine_threadsafe(self.put_artifact(name, data, content_type), self._loop).result()

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
