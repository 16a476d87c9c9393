"""The context a skill handler receives with its input.

`progress` and `log` never block the handler: they queue an event for the worker's reporter, which
publishes it to the task's event subject in order. They are plain methods, safe to call from async
handlers and from sync handlers running in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from opentelemetry.trace import Span

from common.clock import Clock
from common.errors import InvalidInputError, PermanentError
from common.events import TaskArtifact, TaskEvent, TaskLog, TaskProgress, TaskUsage
from common.flow import FailureReason, check_key, failure_reason
from common.ids import new_id
from common.models import ArtifactRef
from common.states import Priority
from common.tracing import tracer
from communication.response_cache import ResponseCache
from storage.artifacts import ArtifactStore
from worker.flow import FlowClient

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
    # Flow control (docs/Flow_control.md): the limit keys the task holds, the model of the
    # alternative that serves it (llm.chat's fallbacks), and the worker's permit client.
    limit_keys: tuple[str, ...] = ()
    flow_model: str | None = None
    # Whose task it is (the coordinator decided it at submit): per-tenant state, such as the
    # response cache, is kept apart by it.
    tenant: str = "default"
    _flow: FlowClient | None = field(default=None, repr=False)
    # Tokens reported inside each open `limit` block, by permit id.
    _call_usage: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def response_cache(self, ttl_s: float | None = None) -> tuple[ResponseCache, float] | None:
        """The response cache and the TTL to cache this skill's answers for: `ttl_s` when the task
        asks for one, else the worker's `flow.cache_ttl_s` for the skill; None when not caching."""
        if self._flow is None:
            return None
        ttl = ttl_s if ttl_s is not None else self._flow.cache_ttl_s.get(self.skill, 0.0)
        return (self._flow.cache, ttl) if ttl > 0 else None

    async def report_cache(self, model: str, result: object, ttl_s: float) -> None:
        """Report the answer of a real call (made with `model`) for the response cache: the
        coordinator writes the entry, keyed from this task's stored input and tenant. A report that
        fails only costs the next hit."""
        if self._flow is not None:
            await self._flow.report_cache(self.task_id, self.attempt, model, result, ttl_s)

    def report_usage(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        *,
        model: str = "",
        key: str = "",
        cache_hit: bool = False,
        call_started_at: float | None = None,
    ) -> None:
        """Report what a call used (tokens): flow control reconciles the key's TPM with it, and usage
        accounting (`claw usage`) adds it up. llm.chat reports the API's `usage` itself."""
        input_tokens, output_tokens = max(0, int(input_tokens)), max(0, int(output_tokens))
        for tally in self._call_usage.values():
            tally[0] += input_tokens
            tally[1] += output_tokens
        self._emit(
            TaskUsage(
                event_id=new_id(),
                task_id=self.task_id,
                attempt=self.attempt,
                node_id=self.node_id,
                at=self._clock.now(),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                model=model,
                key=key or (self.limit_keys[0] if self.limit_keys else ""),
                cache_hit=cache_hit,
                call_started_at=call_started_at,
            )
        )

    @contextlib.asynccontextmanager
    async def limit(self, key: str, *, tokens: int = 0) -> AsyncIterator[None]:
        """Hold a permit on `key` for one call (`async with ctx.limit("llm:glm-4.7", tokens=900):`).

        For handlers that call an API several times (agent loops): each call waits for room under the
        key's limits, cluster-wide. A failure inside the block (429, dropped connection, ...) cools
        the key down and counts for its breaker; the tokens reported inside it reconcile the key's TPM.
        """
        if self._flow is None:
            raise PermanentError("ctx.limit needs a worker connected to a cluster (flow control)")
        check_key(key)
        permit_id = await self._flow.acquire(key, self.task_id, tokens)
        tally = self._call_usage[permit_id] = [0, 0]
        failure: FailureReason | None = None
        retry_after_s: float | None = None
        try:
            yield
        except Exception as exc:
            failure = failure_reason(type(exc).__name__, str(exc))
            retry_after_s = getattr(exc, "retry_after_s", None)
            if failure in (FailureReason.RATE_LIMIT, FailureReason.DISCONNECT):
                self._flow.cool([key], self._clock.now() + (retry_after_s or self._flow.cooldown_s))
            raise
        finally:
            del self._call_usage[permit_id]
            await asyncio.shield(
                self._flow.release(
                    permit_id,
                    input_tokens=tally[0],
                    output_tokens=tally[1],
                    failure=failure,
                    retry_after_s=retry_after_s,
                )
            )

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
