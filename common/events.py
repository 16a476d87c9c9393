"""Task events: what workers report about an attempt, on `<prefix>.events.<task_id>`.

They form one tagged union (`kind` names the variant) decoded by a single typed decoder. Each event
carries its own `event_id`, used as the `Nats-Msg-Id` when published and as a unique key in the event
log, so an event published or delivered twice is recorded once. `attempt` fences results: the
coordinator applies an outcome only for the task's current attempt.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from common.models import SCHEMA_VERSION, ArtifactRef

# Attempt numbers fit SQLite's integers: an event claiming attempt 2**70 is refused when decoded,
# not when its batch is committed (which would fail the whole batch).
MAX_ATTEMPT = 2**31 - 1


class TaskEventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Fields every task event has."""

    v: int = SCHEMA_VERSION
    event_id: str
    task_id: str
    attempt: Annotated[int, msgspec.Meta(ge=0, le=MAX_ATTEMPT)]
    node_id: str
    at: float


class TaskStarted(TaskEventBase, tag="started", frozen=True):
    """A worker began running an attempt.

    `ack_subject` is the delivery's reply subject: if the worker dies, the coordinator NAKs it there
    so JetStream redelivers the task at once instead of after the ack wait.
    """

    ack_subject: str = ""


class TaskProgress(TaskEventBase, tag="progress", frozen=True):
    """A handler reported how far it got (`ctx.progress`)."""

    percent: float | None = None
    message: str = ""


class TaskLog(TaskEventBase, tag="log", frozen=True):
    """A line a handler logged through its context (`ctx.log`)."""

    level: str = "info"
    message: str = ""


class TaskVerifying(TaskEventBase, tag="verifying", frozen=True):
    """The handler returned; its result is being checked (`check`: against the output schema)."""

    check: str = "output_schema"


class TaskSucceeded(TaskEventBase, tag="succeeded", frozen=True):
    """The attempt finished and returned `result` (JSON); a large result is `result_ref` instead."""

    result: msgspec.Raw
    started_at: float
    # False: the worker sent no `started` event for this attempt (it was over before the delay).
    start_sent: bool = True
    result_ref: ArtifactRef | None = None


class TaskFailed(TaskEventBase, tag="failed", frozen=True):
    """The attempt raised; `retryable` is the handler's or the error class's intent.

    `retry_in_s` is set when the worker scheduled another attempt (it nak'ed the message with that
    delay); otherwise this was the last attempt of the series.
    """

    error_type: str
    message: str
    traceback: str = ""
    retryable: bool = False
    started_at: float = 0.0
    # False: the worker sent no `started` event for this attempt (it was over before the delay).
    start_sent: bool = True
    retry_in_s: float | None = None


class TaskArtifact(TaskEventBase, tag="artifact", frozen=True):
    """A handler stored an artifact (`ctx.put_artifact`), or its result went to the store."""

    ref: ArtifactRef
    expires_at: float | None = None


class TaskCancelled(TaskEventBase, tag="cancelled", frozen=True):
    """A running attempt was stopped because its task was cancelled."""

    started_at: float = 0.0
    # False: the worker sent no `started` event for this attempt (it was over before the delay).
    start_sent: bool = True


# The most tokens one usage report may carry (far above any model's context).
MAX_TOKENS = 100_000_000


class TaskUsage(TaskEventBase, tag="usage", frozen=True):
    """What one call of the attempt used (`ctx.report_usage`; llm.chat reports the API's `usage`):
    flow control reconciles the key's tokens and usage accounting adds it up."""

    # Bounded: an absurd count (a forged event) is quarantined instead of overflowing the totals.
    input_tokens: Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)] = 0
    output_tokens: Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)] = 0
    model: Annotated[str, msgspec.Meta(max_length=200)] = ""
    key: Annotated[str, msgspec.Meta(max_length=200)] = ""
    cache_hit: bool = False
    # When the call was sent (the worker's clock): flow control counts the call in its key's request
    # window from then (until it knows, from the attempt's start, a little earlier).
    call_started_at: float | None = None


TaskEvent = (
    TaskStarted
    | TaskProgress
    | TaskLog
    | TaskVerifying
    | TaskSucceeded
    | TaskFailed
    | TaskCancelled
    | TaskArtifact
    | TaskUsage
)
