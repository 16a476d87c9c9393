"""Flow control shared by the coordinator and the workers: limit keys, limits, failure reasons.

A **limit key** names something whose use the cluster must ration (`llm:glm-4.7`,
`http:api.example.com`, `tenant:acme`). A `Limit` on a key bounds requests per window (per second,
minute or hour), tokens per minute and concurrent use. Which keys a task uses comes from:

- its skill: a list of templates over the input (`llm:{model}`) in the skill's manifest
  (`limit_keys`) or in `flow.skill_keys` of the coordinator's config; `llm.chat` and `http.request`
  derive theirs (`llm:{model}`, `http:{host}`) when nothing else is configured;
- the task itself (`claw submit --limit-key KEY`).

The coordinator enforces limits (coordinator/flow/); docs/Flow_control.md is the user's guide.
"""

from __future__ import annotations

import re
import string
import urllib.parse
from enum import StrEnum
from typing import Annotated, Any

import msgspec

from common.errors import InvalidInputError

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:/@+-]{1,200}")
LLM_SKILL = "llm.chat"
HTTP_SKILL = "http.request"
# Keys a skill derives when no template is configured for it.
BUILTIN_TEMPLATES: dict[str, tuple[str, ...]] = {LLM_SKILL: ("llm:{model}",), HTTP_SKILL: ("http:{host}",)}
# The input field of llm.chat listing models it may fall back to (flow control's fallbacks).
FALLBACK_FIELD = "fallback_models"
# Tokens charged for an answer whose request names no max_tokens.
DEFAULT_MAX_TOKENS = 256


class Limit(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """The limit of one key; a None bound is not limited."""

    key: Annotated[str, msgspec.Meta(pattern=KEY_PATTERN.pattern)]
    # At most `requests` starts in any `window_s` (1: per second, 60: per minute, 3600: per hour).
    requests: Annotated[int, msgspec.Meta(ge=1)] | None = None
    window_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 60.0
    tokens_per_minute: Annotated[int, msgspec.Meta(ge=1)] | None = None
    concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None

    def describe(self) -> str:
        """`40/min, 5 concurrent, 100000 tokens/min`."""
        parts: list[str] = []
        if self.requests is not None:
            parts.append(f"{self.requests}/{_WINDOW_NAMES.get(self.window_s, f'{self.window_s:g}s')}")
        if self.concurrency is not None:
            parts.append(f"{self.concurrency} concurrent")
        if self.tokens_per_minute is not None:
            parts.append(f"{self.tokens_per_minute} tokens/min")
        return ", ".join(parts) or "unlimited"


_WINDOW_NAMES = {1.0: "s", 60.0: "min", 3600.0: "h"}


class Price(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a model costs, per million tokens (any currency; usage sums it as given)."""

    input_per_mtok: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    output_per_mtok: Annotated[float, msgspec.Meta(ge=0)] = 0.0


class FailureReason(StrEnum):
    """Why an attempt failed, as far as flow control is concerned (smart retry)."""

    RATE_LIMIT = "rate_limit"
    DISCONNECT = "disconnect"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    INVALID_INPUT = "invalid_input"
    OTHER = "other"


# The reasons that count against a key's breaker: the API, not the task, is in trouble.
BREAKER_REASONS = frozenset(
    {FailureReason.RATE_LIMIT, FailureReason.DISCONNECT, FailureReason.TIMEOUT, FailureReason.SERVER_ERROR}
)


def failure_reason(error_type: str | None, message: str | None) -> FailureReason:
    """Classify an attempt's error from its type and message (as the worker reported them)."""
    text = (message or "").lower()
    kind = error_type or ""
    if "http 429" in text or "rate limit" in text or kind == "RateLimitedError":
        return FailureReason.RATE_LIMIT
    if kind in ("TaskTimeoutError", "ToolTimeoutError", "TimeoutError") or "no answer within" in text:
        return FailureReason.TIMEOUT
    if "disconnect" in text or "connection" in text or kind in ("ConnectionError", "ConnectionResetError"):
        return FailureReason.DISCONNECT
    if re.search(r"http 5\d\d", text):
        return FailureReason.SERVER_ERROR
    if kind in ("InvalidInputError", "PermanentError") or re.search(r"http 4\d\d", text):
        return FailureReason.INVALID_INPUT
    return FailureReason.OTHER


def check_key(key: str) -> str:
    """The key itself, or an InvalidInputError saying what a key may hold."""
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidInputError(
            f"limit key {key!r}: use 1-200 letters, digits and . _ : / @ + - (e.g. llm:glm-4.7, http:api.example.com)"
        )
    return key


def render_key(template: str, fields: dict[str, Any]) -> str:
    """Fill a template (`llm:{provider}:{model}`) from the input's top-level fields."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    values = {}
    for name in names:
        value = fields.get(name)
        if value is None or isinstance(value, dict | list):
            raise InvalidInputError(f"limit key template {template!r}: the input has no scalar field {name!r}")
        values[name] = str(value)
    return check_key(template.format(**values))


def builtin_fields(skill: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The input's fields plus what the built-in skills derive (`host` of http.request's url,
    `model` of llm.chat defaulting to `default`)."""
    derived = dict(fields)
    if skill == HTTP_SKILL and isinstance(fields.get("url"), str):
        try:
            derived.setdefault("host", urllib.parse.urlsplit(fields["url"]).hostname or "unknown")
        except ValueError:
            derived.setdefault("host", "unknown")
    if skill == LLM_SKILL:
        derived.setdefault("model", "default")
    return derived


def estimate_tokens(fields: dict[str, Any]) -> int:
    """A task's token estimate, charged at admission: its prompt's size (4 characters a token) plus
    the tokens its answer may take (`max_tokens`, else DEFAULT_MAX_TOKENS). Reconciled later with
    the usage the handler reports."""
    messages = fields.get("messages")
    prompt_chars = len(msgspec.json.encode(messages)) if messages is not None else 0
    answer = fields.get("max_tokens") or fields.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
    return prompt_chars // 4 + (answer if isinstance(answer, int) and answer > 0 else DEFAULT_MAX_TOKENS)


class FlowTicket(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a published task carries about flow control: its keys (the alternative chosen), which
    alternative serves it (0: the first choice), and the model of that alternative for llm.chat."""

    keys: list[str] = []
    alternative: int = 0
    model: str | None = None
    cache: bool = False


def cooldown_subject(prefix: str) -> str:
    """Where the coordinator broadcasts cooldowns to workers (core NATS)."""
    return f"{prefix}.flow.cooldown"


class CooldownNotice(msgspec.Struct, frozen=True, kw_only=True):
    """Broadcast on `<prefix>.flow.cooldown`: no worker sends on `key` before `until` (epoch s)."""

    key: str
    until: float
    reason: str = ""
