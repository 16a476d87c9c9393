"""The guard: which submitted tasks run at once, which wait for a human's approval, which are denied.

A policy (`config/guard.yaml`, set with `coordinator.guard_policy`) is an ordered list of rules; the
first rule whose `match` fits a task decides. A rule matches on any of:

- `skill`: a name or glob pattern (`pay.*`), or a list of them;
- `risk`: a risk level or a list (`read_only`, `write_draft`, `write_external`, `funds`, `destructive`);
- `submitter`: a name or glob pattern, or a list;
- `input`: `{field.path: condition}` where a condition is a plain value (equal to it) or a mapping
  of `eq`, `ne`, `in`, `gt`, `ge`, `lt`, `le`, `matches` (glob) and `exists`, all of which must hold.

Actions: `allow`; `require_approval` with `approvals: N` distinct approvers (default 1); `deny`.
When no rule matches, `default` applies (`require_approval` unless the policy says otherwise).
The default policy: `read_only` and `write_draft` allowed; `write_external` and `funds` need one
approval; `destructive` needs two.
"""

from __future__ import annotations

import fnmatch
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import msgspec
import yaml

from common.errors import ConfigError
from common.skills import Risk

MISSING = object()


class Action(StrEnum):
    """What a rule decides."""

    ALLOW = "allow"
    REQUIRE_APPROVAL = "require_approval"
    DENY = "deny"


class Match(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The conditions of a rule; all given ones must hold."""

    skill: str | list[str] | None = None
    risk: Risk | list[Risk] | None = None
    submitter: str | list[str] | None = None
    input: dict[str, Any] | None = None


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One policy rule."""

    name: str
    match: Match = Match()
    action: Action
    approvals: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    reason: str = ""


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An ordered list of rules and what applies when none matches."""

    rules: list[Rule]
    default: Action = Action.REQUIRE_APPROVAL
    default_approvals: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The guard's answer for one task, with why."""

    action: Action
    rule: str
    approvals: int = 0
    reason: str = ""
    explanation: list[str] = []


DEFAULT_POLICY = Policy(
    rules=[
        Rule(name="low-risk", match=Match(risk=[Risk.READ_ONLY, Risk.WRITE_DRAFT]), action=Action.ALLOW),
        Rule(
            name="external-or-funds",
            match=Match(risk=[Risk.WRITE_EXTERNAL, Risk.FUNDS]),
            action=Action.REQUIRE_APPROVAL,
            approvals=1,
        ),
        Rule(
            name="destructive",
            match=Match(risk=Risk.DESTRUCTIVE),
            action=Action.REQUIRE_APPROVAL,
            approvals=2,
        ),
    ]
)

_CONDITION_KEYS = {"eq", "ne", "in", "gt", "ge", "lt", "le", "matches", "exists"}


def load_policy(path: str | Path | None) -> Policy:
    """The policy in `path`, or the default policy when None; errors name the file and the field."""
    if path is None:
        return DEFAULT_POLICY
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"guard policy {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"guard policy {path} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    try:
        policy = msgspec.convert(data, Policy, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"guard policy {path}: {exc}") from None
    for rule in policy.rules:
        for field, condition in (rule.match.input or {}).items():
            if isinstance(condition, dict) and not set(condition) <= _CONDITION_KEYS:
                unknown = ", ".join(sorted(set(condition) - _CONDITION_KEYS))
                raise ConfigError(
                    f"guard policy {path}: rule '{rule.name}', input '{field}': unknown condition {unknown} "
                    f"(known: {', '.join(sorted(_CONDITION_KEYS))})"
                )
    return policy


class Guard:
    """Applies a policy to tasks."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.needs_input = any(rule.match.input for rule in policy.rules)

    def decide(self, *, skill: str, risk: Risk, input: Any, submitter: str | None) -> Decision:
        """The first matching rule's decision (or the default)."""
        for rule in self.policy.rules:
            explanation = _matches(rule.match, skill, risk, input, submitter)
            if explanation is not None:
                return Decision(
                    action=rule.action,
                    rule=rule.name,
                    approvals=rule.approvals if rule.action == Action.REQUIRE_APPROVAL else 0,
                    reason=rule.reason,
                    explanation=explanation,
                )
        return Decision(
            action=self.policy.default,
            rule="(default)",
            approvals=self.policy.default_approvals if self.policy.default == Action.REQUIRE_APPROVAL else 0,
            explanation=["no rule matched"],
        )


def _matches(match: Match, skill: str, risk: Risk, input: Any, submitter: str | None) -> list[str] | None:
    """Why the match holds (one line per condition), or None if it does not."""
    why: list[str] = []
    if match.skill is not None:
        patterns = [match.skill] if isinstance(match.skill, str) else match.skill
        if not any(fnmatch.fnmatchcase(skill, p) for p in patterns):
            return None
        why.append(f"skill {skill} matches {', '.join(patterns)}")
    if match.risk is not None:
        risks = [match.risk] if isinstance(match.risk, Risk) else match.risk
        if risk not in risks:
            return None
        why.append(f"risk {risk.value} is one of {', '.join(r.value for r in risks)}")
    if match.submitter is not None:
        patterns = [match.submitter] if isinstance(match.submitter, str) else match.submitter
        if submitter is None or not any(fnmatch.fnmatchcase(submitter, p) for p in patterns):
            return None
        why.append(f"submitter {submitter} matches {', '.join(patterns)}")
    for path, condition in (match.input or {}).items():
        value = _lookup(input, path)
        if not _holds(value, condition):
            return None
        shown = "(absent)" if value is MISSING else repr(value)
        why.append(f"input {path} = {shown} satisfies {condition!r}")
    return why or ["the rule matches every task"]


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return MISSING
    return data


def _holds(value: Any, condition: Any) -> bool:
    if not isinstance(condition, dict):
        return value is not MISSING and value == condition
    for op, expected in condition.items():
        if op == "exists":
            if (value is not MISSING) != bool(expected):
                return False
            continue
        if value is MISSING or not _compare(op, value, expected):
            return False
    return True


def _compare(op: str, value: Any, expected: Any) -> bool:
    try:
        if op == "eq":
            return bool(value == expected)
        if op == "ne":
            return bool(value != expected)
        if op == "in":
            return value in expected
        if op == "matches":
            return isinstance(value, str) and fnmatch.fnmatchcase(value, str(expected))
        if op == "gt":
            return bool(value > expected)
        if op == "ge":
            return bool(value >= expected)
        if op == "lt":
            return bool(value < expected)
        if op == "le":
            return bool(value <= expected)
    except TypeError:
        return False  # e.g. a string compared with a number: the condition does not hold
    return False
