"""Admission: turn a submit request into task records, or refuse it whole with a clear reason.

For each task: the skill must be registered and enabled (or run from code by a worker), the input
must be a JSON object of valid UTF-8 within the size and nesting limits that satisfies the skill's
input schema, an id the client chose must be a ULID of a plausible time, and the guard
decides whether it runs at once, waits for approval, or is denied. Options the task leaves unset
come from the skill's manifest, then from the cluster's defaults.

A request is all-or-nothing: if any of its tasks is invalid, none is written, and the error names
which task (by its position, which is the line number of a JSONL file) and why. A task the guard
denies is not an invalid request: it is recorded `rejected`, so the attempt stays in the audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from common.api import SubmitRequest
from common.clock import Clock
from common.config import CoordinatorSettings
from common.errors import ClawError, InvalidInputError, PayloadTooLargeError, UnknownSkillError
from common.flow import check_key
from common.ids import implausible_id_reason, new_id
from common.models import Backoff, TaskSpec
from common.skills import Risk, SkillManifest, validate_input
from common.states import TaskState
from communication.codec import encode, is_json_object, nesting_exceeds
from communication.subjects import check_skill_name
from coordinator.event_folding import artifact_marker
from coordinator.guard import Action, Decision, Guard
from coordinator.skill_catalog import SkillCatalog
from coordinator.tenants.identity import Caller, tenant_of_submit
from storage.records import TaskRecord

_input_decoder = msgspec.json.Decoder()


class Admission:
    """Validates submissions against the settings, the skill registry and the guard."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        clock: Clock,
        *,
        catalog: SkillCatalog,
        guard: Guard,
        advertised: Callable[[str], tuple[str, str] | None],
        online_skills: Callable[[], set[str]],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._catalog = catalog
        self._guard = guard
        self._advertised = advertised
        self._online_skills = online_skills

    def admit(self, request: SubmitRequest, caller: Caller | None = None) -> list[TaskRecord]:
        """Records (state pending) for every task of the request; raises on the first invalid one.

        The tasks' tenant is decided from the request and the `caller` (coordinator/tenants/identity.py).
        """
        count = len(request.tasks)
        if count == 0:
            raise InvalidInputError("the request holds no tasks")
        if count > self._settings.max_tasks_per_request:
            raise InvalidInputError(
                f"the request holds {count} tasks; at most {self._settings.max_tasks_per_request} "
                "fit in one request: split it"
            )
        tenant = tenant_of_submit(request, caller)
        _check_tenant_keys(request, tenant)
        now = self._clock.now()
        records = []
        for index, spec in enumerate(request.tasks):
            try:
                records.append(self._admit_one(spec, now, request.submitter))
            except ClawError as exc:
                if count == 1:
                    raise
                raise type(exc)(f"task {index + 1}: {exc}") from None
        for record in records:
            record.tenant = tenant
        return records

    def decide(self, skill: str, input: Any, submitter: str | None) -> tuple[Risk, Decision]:
        """What the guard would decide for a task (for `claw guard check`)."""
        manifest, risk = self._skill(skill)
        if manifest is not None:
            validate_input(manifest, input)
        return risk, self._guard.decide(skill=skill, risk=risk, input=input, submitter=submitter)

    def _admit_one(self, spec: TaskSpec, now: float, submitter: str | None) -> TaskRecord:
        manifest, risk = self._skill(spec.skill)
        _check_reserved_key(spec.idempotency_key, submitter)
        if spec.task_id is not None:
            reason = implausible_id_reason(spec.task_id, now_s=now, max_future_s=self._settings.task_id_max_future_s)
            if reason is not None:
                raise InvalidInputError(f"task id {spec.task_id} {reason}")
        if spec.input_ref is not None:
            # A large input in the artifact store: its schema is checked by the worker, before it runs.
            return self._record(spec, now, submitter, manifest, risk, artifact_marker(spec.input_ref), None)
        size = len(spec.input)
        if size > self._settings.max_input_bytes:
            raise PayloadTooLargeError(
                f"the input is {_size(size)}, over the inline limit of {_size(self._settings.max_input_bytes)}; "
                "pass large data by reference (a path or URL the skill can read)"
            )
        if not is_json_object(spec.input):
            raise InvalidInputError('the input must be a JSON object, like {"text": "hello"}')
        text = self._input_text(bytes(spec.input))
        parsed: Any = None
        if (manifest is not None and manifest.input_schema is not None) or self._guard.needs_input:
            parsed = _input_decoder.decode(spec.input)
        if manifest is not None:
            validate_input(manifest, parsed)
        return self._record(spec, now, submitter, manifest, risk, text, parsed)

    def _input_text(self, data: bytes) -> str:
        """The input as text, once it is known to be valid UTF-8 and not nested too deeply.

        The request decoder checked that the input is JSON, but it skips over it as raw bytes: it
        checked neither its strings' encoding nor how deep it nests.
        """
        limit = self._settings.max_input_depth
        if nesting_exceeds(data, limit):
            raise InvalidInputError(
                f"the input nests arrays and objects more than {limit} levels deep "
                "(coordinator.max_input_depth); flatten it or pass it as a string"
            )
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"the input is not valid UTF-8 (byte {exc.start} of the input); JSON text must be UTF-8"
            ) from None

    def _record(
        self,
        spec: TaskSpec,
        now: float,
        submitter: str | None,
        manifest: SkillManifest | None,
        risk: Risk,
        input_text: str,
        parsed: Any,
    ) -> TaskRecord:
        decision = self._guard.decide(skill=spec.skill, risk=risk, input=parsed, submitter=submitter)
        record = TaskRecord(
            task_id=spec.task_id or new_id(),
            id_from_client=spec.task_id is not None,
            skill=spec.skill,
            priority=spec.priority,
            state=TaskState.PENDING,
            input=input_text,
            max_attempts=spec.max_attempts or _manifest_attempts(manifest) or self._settings.default_max_attempts,
            timeout_s=spec.timeout_s or (manifest and manifest.timeout_s) or self._settings.default_timeout_s,
            created_at=now,
            updated_at=now,
            idempotency_key=spec.idempotency_key,
            submitter=submitter,
            backoff=_backoff_json(spec.backoff, manifest),
            risk=risk.value,
            guard_rule=decision.rule,
            flow=_flow_json(spec.limit_keys),
        )
        if decision.action == Action.REQUIRE_APPROVAL:
            record.approvals_needed = decision.approvals
        elif decision.action == Action.DENY:
            record.denied = decision.reason or f"denied by guard rule '{decision.rule}'"
        return record

    def _skill(self, name: str) -> tuple[SkillManifest | None, Risk]:
        """The enabled manifest of a skill (None for one run from code) and its risk."""
        check_skill_name(name)
        entry = self._catalog.enabled(name)
        if entry is not None:
            return entry.manifest, entry.manifest.risk
        if self._catalog.known(name):
            raise InvalidInputError(f"skill '{name}' is disabled; enable it with `claw skills enable {name}`")
        advertised = self._advertised(name)
        if advertised is None:
            raise UnknownSkillError(self._unknown_skill_message(name))
        return None, Risk(advertised[1])

    def _unknown_skill_message(self, skill: str) -> str:
        online = sorted(self._online_skills())
        if not online:
            return (
                f"unknown skill '{skill}': no worker is online to offer any skill; "
                "start one with `claw worker start` (or `claw up`)"
            )
        return f"unknown skill '{skill}'; skills offered by online workers: {', '.join(online)}"


def _manifest_attempts(manifest: SkillManifest | None) -> int | None:
    return manifest.retry.max_attempts if manifest is not None and manifest.retry is not None else None


def _backoff_json(backoff: Backoff | None, manifest: SkillManifest | None) -> str | None:
    """The task's own backoff, else its skill's, else None (the cluster default when published)."""
    if backoff is None and manifest is not None and manifest.retry is not None:
        r = manifest.retry
        backoff = Backoff(base_s=r.base_s, factor=r.factor, max_s=r.max_s, jitter=r.jitter)
    return None if backoff is None else encode(backoff).decode()


def _check_tenant_keys(request: SubmitRequest, tenant: str) -> None:
    """A task may add limit keys, but not another tenant's own key: it would spend that tenant's
    capacity (its `tenant:<name>` limit) and stall its work."""
    own = f"tenant:{tenant}"
    for spec in request.tasks:
        for key in spec.limit_keys:
            if key.startswith("tenant:") and key != own:
                raise InvalidInputError(
                    f"limit key {key!r} is another tenant's own key: a task may only add its own tenant's ({own!r})"
                )


def _flow_json(limit_keys: list[str]) -> str | None:
    """The task's own limit keys, checked, as stored (None when it adds none)."""
    if not limit_keys:
        return None
    for key in limit_keys:
        check_key(key)
    return encode({"keys": sorted(set(limit_keys))}).decode()


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} B"


# Schedules' fire ids (coordinator/schedules/) are the idempotency keys of the tasks they fire: a
# client taking one first would make the fire a "duplicate" of its own task, and the schedule's
# target would never run. Only the schedules submit with them (their submitter is `schedule:<name>`;
# the trust issue binds a client's submitter to its credentials, so no client can claim that name).
RESERVED_KEY_PREFIX = "schedule:"


def _check_reserved_key(key: str | None, submitter: str | None) -> None:
    if key and key.startswith(RESERVED_KEY_PREFIX) and not (submitter or "").startswith(RESERVED_KEY_PREFIX):
        raise InvalidInputError(
            f"idempotency keys starting with '{RESERVED_KEY_PREFIX}' are the fire ids of schedules: choose another key"
        )
