"""How a task record becomes a message on the task queue."""

from __future__ import annotations

import msgspec

from common.config import CoordinatorSettings
from common.models import ARTIFACT_MARKER, EMPTY_OBJECT, ArtifactRef, Backoff, TaskMessage
from storage.records import TaskRecord

MARKER_PREFIX = '{"' + ARTIFACT_MARKER + '":'


def default_backoff(settings: CoordinatorSettings) -> Backoff:
    """The cluster's retry backoff, for tasks that set none."""
    return Backoff(
        base_s=settings.retry_base_s,
        factor=settings.retry_factor,
        max_s=settings.retry_max_s,
        jitter=settings.retry_jitter,
    )


def task_msg_id(record: TaskRecord, nonce: str | None = None) -> str:
    """The `Nats-Msg-Id` of a task's publish.

    Stable for one series, so republishing after a crash is deduplicated by the stream; a new series
    (retry, replay) gets its own id; a `nonce` forces a fresh message (re-posting a lost one).
    """
    base = record.idempotency_key or record.task_id
    msg_id = base if record.attempt_offset == 0 else f"{base}#{record.attempt_offset}"
    return msg_id if nonce is None else f"{msg_id}~{nonce}"


def input_ref_of(text: str) -> ArtifactRef | None:
    """The artifact reference an input marker holds (`{"$artifact": {...}}`), or None for an inline input."""
    if not text.startswith(MARKER_PREFIX):
        return None
    return msgspec.json.decode(text, type=dict[str, ArtifactRef])[ARTIFACT_MARKER]


def task_message_of(record: TaskRecord, fallback_backoff: Backoff) -> TaskMessage:
    """The task message a record is published as (also what its dead letter carries)."""
    backoff = fallback_backoff if record.backoff is None else msgspec.json.decode(record.backoff, type=Backoff)
    ref = input_ref_of(record.input)
    return TaskMessage(
        task_id=record.task_id,
        skill=record.skill,
        input_ref=ref,
        input=EMPTY_OBJECT if ref is not None else msgspec.Raw(record.input.encode()),
        priority=record.priority,
        timeout_s=record.timeout_s,
        max_attempts=record.max_attempts,
        attempt_offset=record.attempt_offset,
        submitted_at=record.created_at,
        backoff=backoff,
        flow=record.flow_ticket,
        tenant=record.tenant,
    )
