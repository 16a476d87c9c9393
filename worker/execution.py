"""Running one delivered task: decode, report `started`, run the handler under its timeout, report
the outcome, and only then settle the message with JetStream.

How a delivery is settled:

| outcome | report | then |
| --- | --- | --- |
| succeeded | `succeeded` | ack |
| failed, retryable, attempts left | `failed` with `retry_in_s` | nak with that delay (JetStream redelivers it) |
| failed otherwise, or attempts exhausted | `failed` (final) | term (the coordinator dead-letters it) |
| cancelled (`claw task cancel`) | `cancelled` | term |
| undecodable (poison) | dead letter with the raw bytes | term |
| worker shutting down past its grace | nothing | nak (redelivered at once to another worker) |

Reporting and settling run shielded from cancellation, so a worker that is shutting down still records
how a finished attempt ended. The retry delay is computed here from the delivery count (JetStream's
own `num_delivered`), not kept in a timer: a worker that dies after the nak loses nothing.
"""

from __future__ import annotations

import asyncio
import base64
import random
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind, StatusCode

from common.clock import Clock
from common.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ClawError,
    InvalidInputError,
    InvalidOutputError,
    PermanentError,
    RetryableError,
    TaskError,
    TaskTimeoutError,
)
from common.events import TaskCancelled, TaskEvent, TaskFailed, TaskStarted, TaskSucceeded, TaskVerifying
from common.flow import FailureReason, failure_reason
from common.ids import new_id
from common.log import get_logger
from common.models import JSON_NULL, RESULT_ARTIFACT, DeadLetter, TaskMessage
from common.skills import SkillManifest, validate_input, validate_output
from common.states import Priority
from common.tracing import current_span, recording
from communication.ack_reply import num_delivered
from communication.codec import DecodeError, decode, encode
from communication.connection import NATS_ERRORS, NatsConnection
from communication.publisher import JetStreamPublisher, Outgoing, PublishFailedError
from communication.subjects import skill_from_token
from communication.trace_context import context_from
from storage.artifacts import ArtifactStore
from worker.cancellation import CancelledTasks
from worker.context import TaskContext
from worker.delivery_claims import ClaimReporter
from worker.flow import FlowClient
from worker.reporter import EventReporter
from worker.skills import Skill, SkillRegistry
from worker.started_event import DeferredStart

log = get_logger("worker.execution")

# Errors that say "try again later" without the handler saying so explicitly.
TRANSIENT_ERRORS = (TimeoutError, ConnectionError)
INPUT_DECODER = msgspec.json.Decoder(dict[str, Any])
SKILL_MISSING_DELAY_S = 5.0
# Results bigger than this are checked against their output schema off the event loop.
VERIFY_IN_THREAD_BYTES = 64 * 1024
# Room for the event's other fields and headers inside NATS's max payload.
EVENT_OVERHEAD_BYTES = 16 * 1024

Outcome = TaskSucceeded | TaskFailed | TaskCancelled


@dataclass(slots=True)
class RunningAttempt:
    """An attempt this worker is running; `cancel_reason` is set when its task was cancelled."""

    task_id: str
    attempt: int
    handler: asyncio.Future[Any] | None = None
    cancel_reason: str | None = None
    start: DeferredStart | None = None

    def emit(self, event: TaskEvent) -> None:
        """Emit an event of this attempt (after its `started`, see worker/started_event.py)."""
        assert self.start is not None, "the attempt has not begun"
        self.start.emit(event)


class TaskRunner:
    """Executes delivered task messages with this worker's skills."""

    def __init__(
        self,
        *,
        conn: NatsConnection,
        node_id: str,
        skills: SkillRegistry,
        reporter: EventReporter,
        clock: Clock,
        threads: ThreadPoolExecutor,
        cancelled: CancelledTasks,
        retry_scheduled: Callable[[str, Priority, float], None] | None = None,
        artifacts: ArtifactStore | None = None,
        inline_max_bytes: int = 256 * 1024,
        artifact_ttl_s: float = 0.0,
        started_event_delay_s: float = 0.0,
        claims: ClaimReporter | None = None,
        flow: FlowClient | None = None,
    ) -> None:
        self._flow = flow
        self._started_event_delay_s = started_event_delay_s
        # With `started` deferred, the coordinator learns a young attempt's ack subject from a claim.
        self._claims = claims if started_event_delay_s > 0 else None
        self._artifacts = artifacts
        self._inline_max_bytes = inline_max_bytes
        self._artifact_ttl_s = artifact_ttl_s
        self._conn = conn
        self._node_id = node_id
        self._skills = skills
        self._reporter = reporter
        self._clock = clock
        self._threads = threads
        self._cancelled = cancelled
        self._retry_scheduled = retry_scheduled
        self._publisher = JetStreamPublisher(conn)
        self._random = random.Random()
        self.running: dict[str, RunningAttempt] = {}

    def cancel(self, task_id: str, reason: str) -> bool:
        """Stop the running attempt of `task_id`, if this worker runs it; True if it did."""
        running = self.running.get(task_id)
        if running is None:
            return False
        running.cancel_reason = reason
        if running.handler is not None:
            running.handler.cancel()
        return True

    async def execute(self, msg: Msg) -> None:
        """Run the task in `msg` to an outcome and settle the message (call it in a task of its own)."""
        try:
            task = decode(msg.data, TaskMessage)
        except DecodeError as exc:
            await self._dead_letter_poison(msg, str(exc))
            return
        skill = self._skills.get(task.skill)
        if skill is None:
            # Only a misrouted message gets here; give it back for a worker that has the skill.
            log.error("task.skill_missing", task_id=task.task_id, skill=task.skill)
            await _settle(msg.nak(delay=SKILL_MISSING_DELAY_S))
            return
        delivered = num_delivered(msg)
        attempt = task.attempt_offset + delivered
        # Bound for the rest of this asyncio task only: each delivery runs in a task of its own
        # (Worker._dispatch), whose context is a copy, so nothing needs unbinding.
        structlog.contextvars.bind_contextvars(task_id=task.task_id, skill=task.skill, attempt=attempt)
        if self._cancelled.covers(task.task_id, task.attempt_offset):
            log.info("task.skipped_cancelled")
            await _settle(msg.term())
            return
        if delivered > task.max_attempts:
            await self._give_up_exhausted(msg, task, attempt, delivered)
            return
        if self._claims is not None:
            self._claims.claim(task.task_id, attempt, msg.reply)
        running = RunningAttempt(task.task_id, attempt)
        self.running[task.task_id] = running
        try:
            await self._run(msg, task, skill, running, delivered)
        finally:
            self.running.pop(task.task_id, None)

    async def _run(self, msg: Msg, task: TaskMessage, skill: Skill, running: RunningAttempt, delivered: int) -> None:
        keys = task.flow.keys if task.flow is not None else []
        if keys and self._flow is not None:
            # Published before its key cooled down (a 429 elsewhere): no call before the cooldown ends.
            waited = await self._flow.wait_cooled(keys)
            if waited:
                log.info("task.cooldown_waited", seconds=round(waited, 3), keys=keys)
        started_at = self._clock.now()
        started = TaskStarted(
            event_id=new_id(),
            task_id=task.task_id,
            attempt=running.attempt,
            node_id=self._node_id,
            at=started_at,
            ack_subject=msg.reply or "",
        )
        loop = asyncio.get_running_loop()
        running.start = DeferredStart(started, self._reporter.emit, loop, self._started_event_delay_s)
        ctx = TaskContext(
            task_id=task.task_id,
            skill=task.skill,
            attempt=running.attempt,
            max_attempts=task.max_attempts,
            priority=task.priority,
            node_id=self._node_id,
            timeout_s=task.timeout_s,
            _emit=running.emit,
            _clock=self._clock,
            _artifacts=self._artifacts,
            _artifact_ttl_s=self._artifact_ttl_s,
            _loop=loop,
            limit_keys=tuple(keys),
            flow_model=task.flow.model if task.flow is not None else None,
            tenant=task.tenant,
            _flow=self._flow,
        )
        attributes: dict[str, str | int] | None = None
        if recording():  # only a recorded span keeps them
            attributes = {
                "claw.task_id": task.task_id,
                "claw.skill": task.skill,
                "claw.attempt": running.attempt,
                "claw.node_id": self._node_id,
                "claw.priority": task.priority.value,
            }
        with current_span(
            "claw.task.execute", context=context_from(msg.headers), kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            try:
                outcome = await self._call(skill, ctx, task, running, started_at)
            except asyncio.CancelledError:
                running.start.settle()
                log.warning("task.interrupted", reason="worker shutting down")
                span.set_attribute("claw.outcome", "interrupted")
                await asyncio.shield(_settle(msg.nak()))
                raise
            except BaseException:
                running.start.settle()  # no `started` for an attempt that has already crashed
                raise
            if not running.start.settle():
                outcome = msgspec.structs.replace(outcome, start_sent=False)
            if isinstance(outcome, TaskFailed):
                self._cool_after(outcome, keys)
                outcome = self._plan_retry(outcome, task, delivered)
                span.set_status(StatusCode.ERROR, f"{outcome.error_type}: {outcome.message}")
            span.set_attribute("claw.outcome", _outcome_name(outcome))
            with current_span("claw.task.report", attributes=attributes):
                await asyncio.shield(self._finish(msg, outcome, task))

    async def _call(
        self, skill: Skill, ctx: TaskContext, task: TaskMessage, running: RunningAttempt, started_at: float
    ) -> Outcome:
        try:
            payload = await self._input(task, skill)
        except (msgspec.DecodeError, ClawError) as exc:
            bad_input = exc if isinstance(exc, ClawError) else InvalidInputError(f"input is not a JSON object: {exc}")
            return self._failed(ctx, started_at, bad_input)
        handler = asyncio.ensure_future(self._invoke(skill, ctx, payload))
        running.handler = handler
        try:
            done, _ = await asyncio.wait([handler], timeout=task.timeout_s)
        finally:
            if not handler.done():
                handler.cancel()
                await asyncio.gather(handler, return_exceptions=True)
        if not done:
            message = f"the handler ran past the task's timeout of {task.timeout_s:g} s and was cancelled"
            return self._failed(ctx, started_at, TaskTimeoutError(message))
        if handler.cancelled() and running.cancel_reason is None:
            return self._failed(ctx, started_at, asyncio.CancelledError("the handler cancelled itself"))
        if handler.cancelled():
            log.info("task.cancelled", reason=running.cancel_reason)
            return TaskCancelled(
                event_id=new_id(),
                task_id=ctx.task_id,
                attempt=ctx.attempt,
                node_id=self._node_id,
                at=self._clock.now(),
                started_at=started_at,
            )
        error = handler.exception()
        if error is not None:
            return self._failed(ctx, started_at, error)
        try:
            result = msgspec.Raw(encode(handler.result()))
        except (TypeError, msgspec.EncodeError) as exc:
            return self._failed(ctx, started_at, TypeError(f"the handler returned a value JSON cannot encode: {exc}"))
        if skill.manifest is not None and skill.manifest.output_schema is not None:
            try:
                await self._verify(ctx, running, skill.manifest, result)
            except InvalidOutputError as exc:
                return self._failed(ctx, started_at, exc)
        result_ref = None
        if len(result) > self._inline_max_bytes and self._artifacts is not None:
            try:
                result_ref = await ctx.put_artifact(RESULT_ARTIFACT, bytes(result), "application/json")
            except ArtifactError as exc:
                return self._failed(ctx, started_at, RetryableError(f"cannot store the result as an artifact: {exc}"))
            result = JSON_NULL
        elif len(result) > self._conn.nc.max_payload - EVENT_OVERHEAD_BYTES:
            limit = self._conn.nc.max_payload - EVENT_OVERHEAD_BYTES
            message = (
                f"the result is {len(result) / 1048576:.1f} MiB, over the {limit / 1048576:.1f} MiB a result "
                "event can carry, and this worker has no artifact store; return a smaller result"
            )
            return self._failed(ctx, started_at, PermanentError(message))
        return TaskSucceeded(
            event_id=new_id(),
            task_id=ctx.task_id,
            attempt=ctx.attempt,
            node_id=self._node_id,
            at=self._clock.now(),
            result=result,
            started_at=started_at,
            result_ref=result_ref,
        )

    async def _verify(
        self, ctx: TaskContext, running: RunningAttempt, manifest: SkillManifest, result: msgspec.Raw
    ) -> None:
        """The `verifying` stage: the result must match the skill's output schema."""
        running.emit(
            TaskVerifying(
                event_id=new_id(),
                task_id=ctx.task_id,
                attempt=ctx.attempt,
                node_id=self._node_id,
                at=self._clock.now(),
            )
        )
        with current_span("claw.task.verify"):
            value = msgspec.json.decode(result)  # what the coordinator will store, not the handler's objects
            if len(result) > VERIFY_IN_THREAD_BYTES:
                await asyncio.to_thread(validate_output, manifest, value)
            else:
                validate_output(manifest, value)

    async def _input(self, task: TaskMessage, skill: Skill) -> Any:
        """The input the handler gets: inline, or fetched from the artifact store (and checked)."""
        if task.input_ref is None:
            return INPUT_DECODER.decode(task.input)
        if self._artifacts is None:
            raise PermanentError("the input is an artifact and this worker has no artifact store configured")
        try:
            data = await self._artifacts.get_bytes(task.input_ref.key)
        except ArtifactNotFoundError:
            raise PermanentError(f"the input artifact {task.input_ref.name} ({task.input_ref.key}) is gone") from None
        payload = INPUT_DECODER.decode(data)
        if skill.manifest is not None:
            validate_input(skill.manifest, payload)  # inline inputs were checked at submit
        return payload

    def _invoke(self, skill: Skill, ctx: TaskContext, payload: dict[str, Any]) -> Awaitable[Any]:
        if skill.is_async:
            try:
                result: Awaitable[Any] = skill.handler(ctx, payload)
            # Raised by the call itself, before any await (a wrong signature): the attempt fails like
            # any handler error instead of escaping the attempt unreported.
            except Exception as exc:  # noqa: BLE001
                failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                return failed
            return result
        # A thread cannot be interrupted: on timeout or cancel the slot is freed, the thread runs on.
        return asyncio.get_running_loop().run_in_executor(self._threads, skill.handler, ctx, payload)

    def _failed(self, ctx: TaskContext, started_at: float, exc: BaseException) -> TaskFailed:
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
            retry_in_s=_retry_after(exc),
        )
        log.info("task.failed", error_type=event.error_type, error=event.message, retryable=retryable)
        return event

    def _cool_after(self, failed: TaskFailed, keys: list[str]) -> None:
        """A 429 or a dropped connection on a task's keys: this worker stops using them at once
        (the coordinator tells every other worker when it folds the failure)."""
        if not keys or self._flow is None:
            return
        reason = failure_reason(failed.error_type, failed.message)
        if reason in (FailureReason.RATE_LIMIT, FailureReason.DISCONNECT):
            wait_s = failed.retry_in_s if reason == FailureReason.RATE_LIMIT and failed.retry_in_s else None
            self._flow.cool(keys, self._clock.now() + (wait_s or self._flow.cooldown_s))

    def _plan_retry(self, failed: TaskFailed, task: TaskMessage, delivered: int) -> TaskFailed:
        """Keep a retry (with its delay) if the error allows one and attempts are left; else final."""
        if not failed.retryable or delivered >= task.max_attempts:
            return msgspec.structs.replace(failed, retry_in_s=None)
        delay = failed.retry_in_s  # the handler's retry-after hint, honoured as given
        if delay is None:
            delay = task.backoff.delay_s(delivered, self._random.random())
        return msgspec.structs.replace(failed, retry_in_s=round(delay, 3))

    async def _finish(self, msg: Msg, outcome: Outcome, task: TaskMessage) -> None:
        """Report the outcome durably, then settle; without a stored report the task is not settled."""
        try:
            await self._reporter.report(outcome)
        except PublishFailedError as exc:
            if exc.permanent:
                await self._fail_unreportable(msg, outcome, exc)
                return
            # Unsettled: JetStream redelivers after the ack wait and another attempt reports again.
            log.error("task.outcome_not_reported", error=str(exc))
            return
        if isinstance(outcome, TaskSucceeded):
            await _settle(msg.ack())
        elif isinstance(outcome, TaskFailed) and outcome.retry_in_s is not None:
            log.info("task.retry_scheduled", retry_in_s=outcome.retry_in_s)
            await _settle(msg.nak(delay=outcome.retry_in_s))
            if self._retry_scheduled is not None:
                self._retry_scheduled(task.skill, task.priority, outcome.retry_in_s)
        else:
            await _settle(msg.term())

    async def _fail_unreportable(self, msg: Msg, outcome: Outcome, exc: PublishFailedError) -> None:
        """An outcome the server can never store (larger than its max_payload, e.g. a huge error
        message) ends the task failed for good with a short event saying why: left unsettled, it would
        come back and fail the same way on every delivery."""
        log.error("task.outcome_too_large", error=str(exc))
        failed = TaskFailed(
            event_id=new_id(),
            task_id=outcome.task_id,
            attempt=outcome.attempt,
            node_id=outcome.node_id,
            at=self._clock.now(),
            error_type="OutcomeTooLargeError",
            message=f"the attempt's {outcome.__struct_config__.tag} event could not be reported: {exc}; keep error "
            "messages and tracebacks short, and return large results through the artifact store",
            started_at=outcome.started_at,
        )
        try:
            await self._reporter.report(failed)
        except PublishFailedError as again:
            log.error("task.outcome_not_reported", error=str(again))
            return
        await _settle(msg.term())

    async def _give_up_exhausted(self, msg: Msg, task: TaskMessage, attempt: int, delivered: int) -> None:
        """A delivery past `max_attempts`: earlier attempts never reported (their worker died)."""
        log.warning("task.attempts_exhausted", delivered=delivered, max_attempts=task.max_attempts)
        now = self._clock.now()
        outcome = TaskFailed(
            event_id=new_id(),
            task_id=task.task_id,
            attempt=attempt,
            node_id=self._node_id,
            at=now,
            error_type="AttemptsExhausted",
            message=(
                f"delivery {delivered} exceeds max_attempts={task.max_attempts}: earlier attempts ended "
                "without reporting (their worker died); not running it again"
            ),
            started_at=now,
        )
        await asyncio.shield(self._finish(msg, outcome, task))

    async def _dead_letter_poison(self, msg: Msg, reason: str) -> None:
        """An undecodable task message: report its bytes for the DLQ, then drop it from the queue."""
        meta = msg.metadata
        seq = meta.sequence.stream
        skill = skill_from_token(msg.subject.rsplit(".", 1)[-1])
        log.error("task.poison", subject=msg.subject, stream_seq=seq, error=reason)
        letter = DeadLetter(
            kind="poison",
            reason=f"undecodable task message: {reason}",
            dead_at=self._clock.now(),
            skill=skill,
            subject=msg.subject,
            raw_base64=base64.b64encode(msg.data).decode(),
            stream_seq=seq,
        )
        subjects = self._conn.subjects
        try:
            await self._publisher.publish(
                # Reported under its own node id; the coordinator checks it and writes the DLQ
                # (workers may not: a letter there would be believed as the task's fate).
                Outgoing(subjects.poison_report(self._node_id), encode(letter), f"poison:{subjects.tasks_stream}:{seq}")
            )
        except PublishFailedError as exc:
            log.error("task.poison_not_dead_lettered", error=str(exc))
            return  # unsettled: redelivered after the ack wait, and tried again
        await _settle(msg.term())


def _outcome_name(outcome: Outcome) -> str:
    if isinstance(outcome, TaskSucceeded):
        return "succeeded"
    if isinstance(outcome, TaskCancelled):
        return "cancelled"
    return "retrying" if outcome.retry_in_s is not None else "failed"


def _retry_after(exc: BaseException) -> float | None:
    hint = getattr(exc, "retry_after_s", None)
    return float(hint) if isinstance(hint, int | float) and hint >= 0 else None


async def _settle(ack: Awaitable[None]) -> None:
    """Send an ack/nak/term; a failure only delays redelivery, so it is logged, not raised."""
    try:
        await ack
    except NATS_ERRORS as exc:
        log.warning("task.ack_failed", error=str(exc))
