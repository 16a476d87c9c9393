"""Guard rules: first match wins; skill, risk, submitter and input conditions; the default policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from common.skills import Risk
from coordinator.guard import DEFAULT_POLICY, Action, Guard, load_policy


def decide(guard: Guard, skill: str = "x", risk: Risk = Risk.READ_ONLY, input: object = None, who: str | None = None):  # type: ignore[no-untyped-def]
    return guard.decide(skill=skill, risk=risk, input=input or {}, submitter=who)


@pytest.mark.parametrize(
    ("risk", "action", "approvals"),
    [
        (Risk.READ_ONLY, Action.ALLOW, 0),
        (Risk.WRITE_DRAFT, Action.ALLOW, 0),
        (Risk.WRITE_EXTERNAL, Action.REQUIRE_APPROVAL, 1),
        (Risk.FUNDS, Action.REQUIRE_APPROVAL, 1),
        (Risk.DESTRUCTIVE, Action.REQUIRE_APPROVAL, 2),
    ],
)
def test_default_policy(risk: Risk, action: Action, approvals: int) -> None:
    decision = decide(Guard(DEFAULT_POLICY), risk=risk)
    assert (decision.action, decision.approvals) == (action, approvals)


def test_shipped_policy_file_is_the_default() -> None:
    assert load_policy(Path(__file__).resolve().parents[2] / "config" / "guard.yaml") == DEFAULT_POLICY


def policy(tmp_path: Path, text: str) -> Guard:
    path = tmp_path / "guard.yaml"
    path.write_text(text)
    return Guard(load_policy(path))


def test_first_matching_rule_wins_and_conditions_combine(tmp_path: Path) -> None:
    guard = policy(
        tmp_path,
        """
rules:
  - name: bots-no-funds
    match: {risk: funds, submitter: "bot-*"}
    action: deny
    reason: no money for bots
  - name: small-eur
    match: {skill: "pay.*", input: {amount: {le: 50}, currency: EUR, memo: {exists: false}}}
    action: allow
  - name: big
    match: {skill: "pay.*", input: {amount: {gt: 50}}}
    action: require_approval
    approvals: 2
default: deny
""",
    )
    bot = decide(guard, "pay.send", Risk.FUNDS, {"amount": 5, "currency": "EUR"}, "bot-1")
    assert (bot.action, bot.rule, bot.reason) == (Action.DENY, "bots-no-funds", "no money for bots")
    small = decide(guard, "pay.send", Risk.FUNDS, {"amount": 50, "currency": "EUR"}, "alice")
    assert (small.action, small.rule) == (Action.ALLOW, "small-eur")
    assert "input amount = 50 satisfies {'le': 50}" in small.explanation
    memo = decide(guard, "pay.send", Risk.FUNDS, {"amount": 5, "currency": "EUR", "memo": "x"}, "alice")
    assert memo.action == Action.DENY and memo.rule == "(default)"
    big = decide(guard, "pay.send", Risk.FUNDS, {"amount": 500, "currency": "USD"})
    assert (big.action, big.approvals) == (Action.REQUIRE_APPROVAL, 2)
    wrong_type = decide(guard, "pay.send", Risk.FUNDS, {"amount": "lots"})
    assert wrong_type.rule == "(default)"  # a string is not compared with a number


def test_nested_input_paths_and_list_membership(tmp_path: Path) -> None:
    guard = policy(
        tmp_path,
        """
rules:
  - name: get-only
    match: {skill: http.request, input: {method: {in: [GET, HEAD]}, "target.host": {matches: "*.example.com"}}}
    action: allow
""",
    )
    ok = decide(guard, "http.request", Risk.WRITE_EXTERNAL, {"method": "GET", "target": {"host": "api.example.com"}})
    assert ok.action == Action.ALLOW
    post = decide(guard, "http.request", Risk.WRITE_EXTERNAL, {"method": "POST", "target": {"host": "api.example.com"}})
    assert post.action == Action.REQUIRE_APPROVAL  # the default default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [{name: x, action: maybe}]", "Invalid enum value 'maybe'"),
        ("rules: [{name: x, action: allow, match: {colour: red}}]", "unknown field `colour`"),
        ("rules: [{name: x, action: allow, match: {input: {a: {bigger: 1}}}}]", "unknown condition bigger"),
        ("rules: [{name: x, action: require_approval, approvals: 0}]", "Expected `int` >= 1"),
    ],
)
def test_policy_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy(tmp_path, text)
