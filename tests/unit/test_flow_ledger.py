"""Flow control's bookkeeping of one key: request windows, concurrency, tokens, cooldown and the
breaker; the failure reasons of smart retry; key templates."""

from __future__ import annotations

import pytest

from common.errors import InvalidInputError
from common.flow import FailureReason, Limit, builtin_fields, estimate_tokens, failure_reason, render_key
from coordinator.flow.ledger import Breaker, KeyUse


def test_a_start_counts_from_when_it_started_and_until_then_in_every_window() -> None:
    use = KeyUse("k", limit=Limit(key="k", requests=2, window_s=1.0))
    use.charge("a", 0.0, 0)
    use.charge("b", 0.0, 0)
    assert use.room(5.0, 0) is not None  # neither started yet: both still count
    use.started("a", 5.0)
    use.started("b", 5.1)
    assert use.room(5.95, 0) == "rate 2/s"
    assert use.room(6.05, 0) is None  # a left the window; b stays in it until 6.1


def test_concurrency_is_held_until_release_and_a_release_without_a_start_frees_the_start() -> None:
    use = KeyUse("k", limit=Limit(key="k", concurrency=1, requests=1, window_s=60.0))
    use.charge("a", 0.0, 0)
    assert use.room(0.0, 0) == "concurrency 1/1"
    use.release("a")  # cancelled before any worker started it: it made no call
    assert use.room(0.0, 0) is None


def test_tokens_are_charged_by_estimate_then_reconciled() -> None:
    use = KeyUse("k", limit=Limit(key="k", tokens_per_minute=100))
    use.charge("a", 0.0, 90)
    assert use.room(1.0, 20) == "tokens 90/100 per minute"
    use.reconcile("a", 30)
    assert use.room(1.0, 20) is None and use.tokens_used(1.0) == 30
    assert use.tokens_used(61.0) == 0


def test_the_breaker_opens_after_n_failures_lets_one_probe_through_and_closes_on_its_success() -> None:
    use = KeyUse("k")
    for _ in range(2):
        assert not use.failed(FailureReason.DISCONNECT, 0.0, breaker_failures=3, breaker_open_s=10.0)
    assert not use.failed(FailureReason.INVALID_INPUT, 0.0, breaker_failures=3, breaker_open_s=10.0)
    assert use.failed(FailureReason.SERVER_ERROR, 0.0, breaker_failures=3, breaker_open_s=10.0)
    assert use.room(5.0, 0) is not None and use.breaker == Breaker.OPEN
    assert use.room(10.0, 0) is None and use.breaker == Breaker.HALF_OPEN
    use.charge("probe", 10.0, 0)
    assert use.room(10.0, 0) == "breaker half-open: a probe is running"
    use.succeeded()
    assert use.breaker == Breaker.CLOSED and use.room(10.0, 0) is None


def test_a_failed_probe_opens_the_breaker_again() -> None:
    use = KeyUse("k", breaker=Breaker.HALF_OPEN)
    assert use.failed(FailureReason.TIMEOUT, 1.0, breaker_failures=5, breaker_open_s=2.0)
    assert use.breaker == Breaker.OPEN and use.open_until == 3.0


def test_a_cooldown_stops_every_start_until_it_ends() -> None:
    use = KeyUse("k")
    assert use.cool(2.0, "rate_limit") and not use.cool(1.0, "rate_limit")
    assert use.room(1.9, 0) == "cooling down 0.1 s (rate_limit)"
    assert use.room(2.0, 0) is None


@pytest.mark.parametrize(
    ("error_type", "message", "reason"),
    [
        ("RetryableError", "llm.chat: the model API answered HTTP 429: Rate limit reached", FailureReason.RATE_LIMIT),
        ("RetryableError", "llm.chat: the request failed: Server disconnected", FailureReason.DISCONNECT),
        ("ToolTimeoutError", "llm.chat: the model API gave no answer within 5 s", FailureReason.TIMEOUT),
        ("RetryableError", "llm.chat: the model API answered HTTP 502: bad gateway", FailureReason.SERVER_ERROR),
        ("PermanentError", "llm.chat: the model API answered HTTP 400: bad temperature", FailureReason.INVALID_INPUT),
        ("ValueError", "boom", FailureReason.OTHER),
    ],
)
def test_failure_reasons(error_type: str, message: str, reason: FailureReason) -> None:
    assert failure_reason(error_type, message) == reason


def test_key_templates_render_from_the_input_and_refuse_what_is_missing() -> None:
    fields = builtin_fields("http.request", {"url": "https://api.example.com/v1/x"})
    assert render_key("http:{host}", fields) == "http:api.example.com"
    assert render_key("llm:{model}", builtin_fields("llm.chat", {})) == "llm:default"
    with pytest.raises(InvalidInputError, match="no scalar field 'provider'"):
        render_key("llm:{provider}:{model}", {"model": "m"})
    assert estimate_tokens({"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}) > 150


def test_a_calls_own_start_replaces_the_attempts_earlier_one() -> None:
    use = KeyUse("k", limit=Limit(key="k", requests=1, window_s=1.0))
    use.charge("a", 0.0, 0)
    use.started("a", 10.0)  # the attempt started; its call went out later
    use.started("a", 10.4, exact=True)
    assert use.room(11.2, 0) == "rate 1/s"  # counted from 10.4 (plus 1 % of the window)
    assert use.room(11.42, 0) is None
    use.started("a", 10.2, exact=True)  # an earlier time never moves it back
    assert use.room(11.3, 0) == "rate 1/s"


def test_templates_come_from_the_config_else_the_manifest_else_the_built_in_ones() -> None:
    from coordinator.flow.keys import KeyResolver

    declared = {"my.agent": ["llm:{provider}:{model}"]}
    resolver = KeyResolver({"llm.chat": ["llm:custom:{model}"]}, lambda skill: declared.get(skill, []))
    assert resolver.templates("llm.chat") == ["llm:custom:{model}"]
    assert resolver.templates("my.agent") == ["llm:{provider}:{model}"]
    assert resolver.templates("http.request") == ["http:{host}"]
    assert resolver.templates("echo") == []


def test_a_manifest_with_a_bad_key_template_is_refused_naming_the_field() -> None:
    from common.skills import ManifestError, parse_manifest

    base = {"name": "my.agent", "version": "1.0.0", "risk": "read_only", "runtime": {"python": "h:run"}}
    assert parse_manifest({**base, "limit_keys": ["llm:{provider}:{model}"]}, source="t").limit_keys
    with pytest.raises(ManifestError, match="field 'limit_keys'"):
        parse_manifest({**base, "limit_keys": ["llm {model}"]}, source="t")
