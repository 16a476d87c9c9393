"""Running one delivered task: decode, report `started`, run the handler under its timeout, report
the outcome, and only then ack.

The outcome report and the ack run shielded from cancellation, so a worker that is shutting down still
records how a finished attempt ended. A handler cancelled because the worker is shutting down (past
its grace period) reports nothing and naks its message, so another worker picks it up at once.
"""

from __future__ import annotations

import asyncio
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import structlog
from nats.aio.msg import Msg

from common.clock import Clock
from common.errors import InvalidInputError, TaskError, TaskTimeoutError
from common.events import TaskFailed, TaskStarted, TaskSucceeded
from common.ids import new_id
from common.log import get_logger
from common.models import TaskMessage
from communication.codec import DecodeError, decode, encode
from communication.connection import NATS_ERRORS
from communication.publisher import PublishFailedError
from worker.context import TaskContext
from worker.reporter import EventReporter
from worker.skills import Skill, SkillRegistry

log = get_logger("worker.execution")

# Errors that say "try again later" without the handler saying so explicitly.
TRANSIENT_ERRORS = (TimeoutError, ConnectionError)
INPUT_DECODER = msgspec.json.Decoder(dict[str, Any])


class TaskRunner:
    """Executes delivered task messages with this worker's skills."""

    def __init__(
        self,
        *,
        node_id: str,
        skills: SkillRegistry,
        reporter: EventReporter,
        clock: Clock,
        threads: ThreadPoolExecutor,
    ) -> None:
        self._node_id = node_id
        self._skills = skills
        self._reporter = reporter
        self._clock = clock
        self._threads = threads

    async def execute(self, msg: Msg) -> None:
        """Run the task in `msg` to an outcome and ack it (or nak it when cancelled by shutdown)."""
        try:
            task = decode(msg.data, TaskMessage)
        except DecodeError as exc:
            log.error("task.undecodable", subject=msg.subject, error=str(exc), data=msg.data[:200])
            await _settle(msg.term())
            return
        skill = self._skills.get(task.skill)
        if skill is None:
            # Only a misrouted message gets here; give it back for a worker that has the skill.
            log.error("task.skill_missing", task_id=task.task_id, skill=task.skill)
            await _settle(msg.nak(delay=5))
            return
        attempt = task.attempt_offset + msg.metadata.num_delivered
        with structlog.contextvars.bound_contextvars(task_id=task.task_id, skill=task.skill, attempt=attempt):
            await self._run(msg, task, skill, attempt)

    async def _run(self, msg: Msg, task: TaskMessage, skill: Skill, attempt: int) -> None:
        started_at = self._clock.now()
        self._reporter.emit(
            TaskStarted(event_id=new_id(), task_id=task.task_id, attempt=attempt, node_id=self._node_id, at=started_at)
        )
        ctx = TaskContext(
            task_id=task.task_id,
            skill=task.skill,
            attempt=attempt,
            max_attempts=task.max_attempts,
            priority=task.priority,
            node_id=self._node_id,
            timeout_s=task.timeout_s,
            _emit=self._reporter.emit,
            _clock=self._clock,
        )
        try:
            outcome: TaskSucceeded | TaskFailed = await self._call(skill, ctx, task, started_at)
        except asyncio.CancelledError:
            log.warning("task.interrupted", reason="worker shutting down")
            await asyncio.shield(_settle(msg.nak()))
            raise
        await asyncio.shield(self._finish(msg, outcome))

    async def _call(
        self, skill: Skill, ctx: TaskContext, task: TaskMessage, started_at: float
    ) -> TaskSucceeded | TaskFailed:
        try:
            payload = INPUT_DECODER.decode(task.input)
        except msgspec.DecodeError as exc:
            return self._failed(ctx, started_at, exc=InvalidInputError(f"input is not a JSON object: {exc}"))
        deadline = asyncio.timeout(task.timeout_s)
        try:
            async with deadline:
                if skill.is_async:
                    result = await skill.handler(ctx, payload)
                else:
                    loop = asyncio.get_running_loop()
                    result = await loop.run_in_executor(self._threads, skill.handler, ctx, payload)
            encoded = _encode_result(result)
        except TimeoutError as exc:
            if not deadline.expired():
                return self._failed(ctx, started_at, exc=exc)  # the handler's own timeout, not ours
            message = f"the handler ran past the task's timeout of {task.timeout_s:g} s and was cancelled"
            return self._failed(ctx, started_at, exc=TaskTimeoutError(message))
        except Exception as exc:  # noqa: BLE001 - a handler may raise anything; it becomes the outcome
            return self._failed(ctx, started_at, exc=exc)
        return TaskSucceeded(
            event_id=new_id(),
            task_id=ctx.task_id,
            attempt=ctx.attempt,
            node_id=self._node_id,
            at=self._clock.now(),
            result=encoded,
            started_at=started_at,
        )

    def _failed(self, ctx: TaskContext, started_at: float, *, exc: BaseException) -> TaskFailed:
        retryable = exc.retryable if isinstance(exc, TaskError) else isinstance(exc, TRANSIENT_ERRORS)
        event = TaskFailed(
            event_id=new_id(),
            task_id=ctx.task_id,
            attempt=ctx.attempt,
            node_id=self._node_id,
            at=self._clock.now(),
            error_type=type(exc).__name__,
            message=str(exc) or type(exc).__name__,
            traceback="".join(traceback.format_exception(exc)),
            retryable=retryable,
            started_at=started_at,
        )
        log.info("task.failed", error_type=event.error_type, error=event.message, retryable=retryable)
        return event

    async def _finish(self, msg: Msg, outcome: TaskSucceeded | TaskFailed) -> None:
        """Report the outcome durably, then ack; without a stored report the task is not acked."""
        try:
            await self._reporter.report(outcome)
        except PublishFailedError as exc:
            # Unacked: JetStream redelivers after the ack wait and another attempt reports again.
            log.error("task.outcome_not_reported", error=str(exc))
            return
        await _settle(msg.ack())


def _encode_result(result: Any) -> msgspec.Raw:
    try:
        return msgspec.Raw(encode(result))
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"the handler returned a value JSON cannot encode: {exc}") from None


async def _settle(ack: Any) -> None:
    """Send an ack/nak/term; a failure only delays redelivery, so it is logged, not raised."""
    try:
        await ack
    except NATS_ERRORS as exc:
        log.warning("task.ack_failed", error=str(exc))
