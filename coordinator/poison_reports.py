"""Workers' reports of task messages they could not decode ("poison"), checked before they become
dead letters.

A worker may not publish on the DLQ (a letter there is believed as a task's fate by `claw dlq list`
and `replay`): it reports what it found on its own event subject `<prefix>.events.<node>.poison`,
which the server binds to its credentials. The coordinator believes a report only as far as a
worker could know it: a poison letter names no task, carries no task message or attempts, holds the
raw bytes, and those bytes really do not decode as a task message (the coordinator only publishes
ones that do, so a report of a decodable message is a lie about a real task). The letter it writes
is built from the report's checked fields, with the reporting node from the subject
(`reported_by`); anything else is refused, quarantined and logged as `security.poison_refused`.
"""

from __future__ import annotations

import base64
import binascii

from common.errors import BadEventError, ForgedEventError, InvalidInputError
from common.models import DeadLetter, TaskMessage
from common.states import PRIORITIES
from communication.codec import DecodeError, decode
from communication.subjects import Subjects, check_skill_name

REASON_MAX = 2000


def poison_letter(subjects: Subjects, node_id: str, data: bytes, now: float) -> DeadLetter:
    """The dead letter a node's poison report stands for; raises `ForgedEventError` (a report no
    worker could honestly make) or `BadEventError` (not a report at all)."""
    try:
        report = decode(data, DeadLetter)
    except DecodeError as exc:
        raise BadEventError(f"poison report of node {node_id} is undecodable: {exc}") from None
    if report.kind != "poison" or report.task_id is not None or report.task is not None or report.attempts:
        raise ForgedEventError(
            f"poison report of node {node_id} names a task or its attempts: only the coordinator dead-letters tasks"
        )
    try:
        check_skill_name(report.skill)
    except InvalidInputError as exc:
        raise ForgedEventError(f"poison report of node {node_id}: {exc}") from None
    if report.subject not in {subjects.task(p, report.skill) for p in PRIORITIES}:
        raise ForgedEventError(
            f"poison report of node {node_id} names subject {report.subject[:120]}, not a task subject of "
            f"skill {report.skill}"
        )
    try:
        raw = base64.b64decode(report.raw_base64 or "", validate=True)
    except (binascii.Error, ValueError):
        raise ForgedEventError(f"poison report of node {node_id} holds no raw message (base64)") from None
    try:
        decode(raw, TaskMessage)
    except DecodeError:
        pass  # poison indeed
    else:
        raise ForgedEventError(
            f"poison report of node {node_id} holds a decodable task message: a task's fate is the coordinator's"
        )
    return DeadLetter(
        kind="poison",
        reason=report.reason[:REASON_MAX],
        dead_at=now,
        skill=report.skill,
        subject=report.subject,
        raw_base64=report.raw_base64,
        stream_seq=report.stream_seq,
        reported_by=node_id,
    )
