"""Names derived from the prefix, and the skill <-> subject token mapping."""

from __future__ import annotations

import pytest

from common.errors import InvalidInputError
from common.states import Priority
from communication.subjects import Subjects, check_skill_name, skill_from_token, skill_token


def test_default_prefix_matches_the_design_contract() -> None:
    s = Subjects("claw")
    assert s.task(Priority.HIGH, "llm.chat") == "claw.tasks.high.llm-chat"
    assert (s.tasks_stream, s.events_stream, s.dlq_stream, s.nodes_bucket) == (
        "CLAW_TASKS", "CLAW_EVENTS", "CLAW_DLQ", "claw_nodes",
    )  # fmt: skip
    assert s.events("w1", "T1") == "claw.events.w1.T1"
    assert s.dlq("llm.chat") == "claw.dlq.llm-chat"
    assert s.heartbeat("n1") == "claw.nodes.heartbeat.n1"
    assert s.api("alice", "submit") == "claw.api.alice.submit"
    assert s.ctl("n1") == "claw.ctl.n1"
    assert s.cancel("T1") == "claw.cancel.T1"


def test_another_prefix_gives_a_separate_cluster() -> None:
    s = Subjects("blue")
    assert s.tasks_stream == "BLUE_TASKS"
    assert s.task(Priority.LOW, "echo") == "blue.tasks.low.echo"


@pytest.mark.parametrize("skill", ["echo", "llm.chat", "fs.read", "a_b.c2"])
def test_skill_token_round_trips(skill: str) -> None:
    assert "." not in skill_token(skill)
    assert skill_from_token(skill_token(skill)) == skill


@pytest.mark.parametrize(
    "bad", ["", "Echo", "llm-chat", "a..b", ".a", "a.", "has space", "x" * 65, "a>b", "a*", "echo\n", "\necho"]
)
def test_invalid_skill_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="not a valid skill name"):
        check_skill_name(bad)
