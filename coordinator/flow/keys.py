"""Which limit keys a task uses, and the alternatives it accepts (fallbacks).

A task's keys are its skill's templates rendered over its input (`flow.skill_keys`, else the built-in
ones of llm.chat and http.request) plus the keys the task added itself, plus `tenant:<its tenant>`
while that key has a limit (a tenant's own limit holds over all its work without any task naming
it; without such a limit the key is left out, so unlimited tasks keep costing one dict lookup).

llm.chat's input may list `fallback_models`: each is an alternative whose keys are the same
templates rendered with that model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from common.flow import BUILTIN_TEMPLATES, FALLBACK_FIELD, LLM_SKILL, builtin_fields, estimate_tokens, render_key
from common.log import get_logger
from storage.records import TaskRecord

log = get_logger("coordinator.flow")

# A tenant's own limit key: `tenant:acme`.
TENANT_KEY_PREFIX = "tenant:"


@dataclass(frozen=True, slots=True)
class Alternative:
    """One way to run a task: the keys it takes, and the model it then uses (llm.chat)."""

    keys: list[str]
    model: str | None = None


@dataclass(frozen=True, slots=True)
class TaskKeys:
    """A task's alternatives (the first is its own choice) and its token estimate."""

    alternatives: list[Alternative]
    tokens: int

    @property
    def keys(self) -> list[str]:
        """The keys of the first choice."""
        return self.alternatives[0].keys


class KeyResolver:
    """Resolves tasks' keys from the configured templates."""

    def __init__(
        self,
        skill_keys: dict[str, list[str]],
        manifest_keys: Callable[[str], list[str]] | None = None,
        *,
        limited: Callable[[str], bool] | None = None,
    ) -> None:
        self._configured = {k: list(v) for k, v in skill_keys.items()}
        self._manifest_keys = manifest_keys
        # Whether a key has a limit now: decides if a task takes its tenant's key.
        self._limited = limited

    def templates(self, skill: str) -> list[str]:
        """A skill's templates: the config's (`flow.skill_keys`), else its manifest's (`limit_keys`),
        else the built-in ones (llm.chat, http.request)."""
        configured = self._configured.get(skill)
        if configured is not None:
            return configured
        declared = self._manifest_keys(skill) if self._manifest_keys is not None else []
        return declared or list(BUILTIN_TEMPLATES.get(skill, ()))

    def resolve(self, record: TaskRecord) -> TaskKeys | None:
        """The task's keys, or None when it uses none; an InvalidInputError when a template needs
        a field the input lacks (the task would otherwise escape its limit)."""
        own = _own_keys(record)
        tenant_key = f"{TENANT_KEY_PREFIX}{record.tenant}"
        if self._limited is not None and tenant_key not in own and self._limited(tenant_key):
            own.append(tenant_key)
        templates = self.templates(record.skill)
        if not templates and not own:
            return None
        fields = _fields(record)
        derived = builtin_fields(record.skill, fields)
        model = derived.get("model") if _is_llm(record) else None
        first = Alternative(_render(templates, derived, record) + own, model)
        alternatives = [first]
        fallbacks = fields.get(FALLBACK_FIELD) if _is_llm(record) else None
        if isinstance(fallbacks, list):
            for model in fallbacks:
                if isinstance(model, str) and model:
                    keys = _render(templates, {**derived, "model": model}, record) + own
                    alternatives.append(Alternative(keys, model))
        if not first.keys:
            return None
        return TaskKeys(alternatives, estimate_tokens(fields) if _is_llm(record) or "messages" in fields else 0)


def _is_llm(record: TaskRecord) -> bool:
    return record.skill == LLM_SKILL


def _own_keys(record: TaskRecord) -> list[str]:
    if not record.flow:
        return []
    stored = msgspec.json.decode(record.flow)
    keys = stored.get("keys", []) if isinstance(stored, dict) else []
    return [k for k in keys if isinstance(k, str)]


def _fields(record: TaskRecord) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(record.input)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _render(templates: list[str], fields: dict[str, Any], record: TaskRecord) -> list[str]:
    keys: list[str] = []
    for template in templates:
        key = render_key(template, fields)
        if key not in keys:
            keys.append(key)
    return keys
