"""Admission: turn a submit request into task records, or refuse it whole with a clear reason.

A request is all-or-nothing: if any of its tasks is invalid, none is written, and the error names
which task (by its position, which is the line number of a JSONL file) and why.
"""

from __future__ import annotations

from collections.abc import Callable

from common.api import SubmitRequest
from common.clock import Clock
from common.config import CoordinatorSettings
from common.errors import ClawError, InvalidInputError, PayloadTooLargeError, UnknownSkillError
from common.ids import new_id
from common.models import TaskSpec
from common.states import TaskState
from communication.codec import encode, is_json_object
from communication.subjects import check_skill_name
from storage.records import TaskRecord


class Admission:
    """Validates submissions against the settings and the skills workers offer."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        clock: Clock,
        *,
        known_skills: Callable[[], set[str]],
        online_skills: Callable[[], set[str]],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._known_skills = known_skills
        self._online_skills = online_skills

    def admit(self, request: SubmitRequest) -> list[TaskRecord]:
        """Records (state pending) for every task of the request; raises on the first invalid one."""
        count = len(request.tasks)
        if count == 0:
            raise InvalidInputError("the request holds no tasks")
        if count > self._settings.max_tasks_per_request:
            raise InvalidInputError(
                f"the request holds {count} tasks; at most {self._settings.max_tasks_per_request} "
                "fit in one request: split it"
            )
        known = self._known_skills()
        now = self._clock.now()
        records = []
        for index, spec in enumerate(request.tasks):
            try:
                records.append(self._admit_one(spec, known, now, request.submitter))
            except ClawError as exc:
                if count == 1:
                    raise
                raise type(exc)(f"task {index + 1}: {exc}") from None
        return records

    def _admit_one(self, spec: TaskSpec, known: set[str], now: float, submitter: str | None) -> TaskRecord:
        check_skill_name(spec.skill)
        if spec.skill not in known:
            raise UnknownSkillError(self._unknown_skill_message(spec.skill))
        size = len(spec.input)
        if size > self._settings.max_input_bytes:
            raise PayloadTooLargeError(
                f"the input is {_size(size)}, over the inline limit of {_size(self._settings.max_input_bytes)}; "
                "pass large data by reference (a path or URL the skill can read)"
            )
        if not is_json_object(spec.input):
            raise InvalidInputError('the input must be a JSON object, like {"text": "hello"}')
        return TaskRecord(
            task_id=spec.task_id or new_id(),
            skill=spec.skill,
            priority=spec.priority,
            state=TaskState.PENDING,
            input=bytes(spec.input).decode(),
            max_attempts=spec.max_attempts or self._settings.default_max_attempts,
            timeout_s=spec.timeout_s or self._settings.default_timeout_s,
            created_at=now,
            updated_at=now,
            idempotency_key=spec.idempotency_key,
            submitter=submitter,
            backoff=None if spec.backoff is None else encode(spec.backoff).decode(),
        )

    def _unknown_skill_message(self, skill: str) -> str:
        online = sorted(self._online_skills())
        if not online:
            return (
                f"unknown skill '{skill}': no worker is online to offer any skill; "
                "start one with `claw worker start` (or `claw up`)"
            )
        return f"unknown skill '{skill}'; skills offered by online workers: {', '.join(online)}"


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} B"
