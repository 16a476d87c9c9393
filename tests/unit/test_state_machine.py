"""The transition table: exactly the legal changes pass, every other one is refused."""

from __future__ import annotations

import itertools

import pytest

from common.errors import IllegalTransitionError
from common.states import TERMINAL_STATES, TaskState
from coordinator.state_machine import TRANSITIONS, can_transition, transition
from storage.records import TaskRecord

S = TaskState

# Written out independently of the table, so that a change to the table must be a change here too.
LEGAL = {
    (S.PENDING, S.QUEUED),
    (S.PENDING, S.WAITING_APPROVAL),
    (S.PENDING, S.REJECTED),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.FAILED),
    (S.WAITING_APPROVAL, S.PENDING),
    (S.WAITING_APPROVAL, S.REJECTED),
    (S.WAITING_APPROVAL, S.CANCELLED),
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.CANCELLED),
    (S.QUEUED, S.DEAD),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.RETRYING),
    (S.RUNNING, S.DEAD),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.QUEUED),
    (S.RETRYING, S.RUNNING),
    (S.RETRYING, S.CANCELLED),
    (S.RETRYING, S.DEAD),
    (S.FAILED, S.PENDING),
    (S.DEAD, S.PENDING),
    (S.CANCELLED, S.PENDING),
    # Flow control's escalation: a person retries (a new series) or cancels.
    (S.RUNNING, S.NEEDS_INPUT),
    (S.NEEDS_INPUT, S.PENDING),
    (S.NEEDS_INPUT, S.CANCELLED),
}
ALL_PAIRS = list(itertools.product(TaskState, TaskState))


def _record(state: TaskState) -> TaskRecord:
    return TaskRecord(
        task_id="T1", skill="echo", priority="normal", state=state, input="{}",  # type: ignore[arg-type]
        max_attempts=3, timeout_s=10.0, created_at=1.0, updated_at=1.0,
    )  # fmt: skip


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(TaskState)


@pytest.mark.parametrize(("from_state", "to_state"), sorted(LEGAL))
def test_legal_transition_moves_the_record_and_logs_it(from_state: TaskState, to_state: TaskState) -> None:
    record = _record(from_state)
    row = transition(record, to_state, at=5.0, kind="test", node_id="n1")
    assert record.state == to_state
    assert record.updated_at == 5.0
    assert (row.from_state, row.to_state, row.kind, row.at, row.node_id) == (from_state, to_state, "test", 5.0, "n1")


@pytest.mark.parametrize(("from_state", "to_state"), [p for p in ALL_PAIRS if p not in LEGAL])
def test_illegal_transition_is_refused_and_changes_nothing(from_state: TaskState, to_state: TaskState) -> None:
    record = _record(from_state)
    with pytest.raises(IllegalTransitionError, match=f"{from_state.value} -> {to_state.value}"):
        transition(record, to_state, at=5.0, kind="test")
    assert record.state == from_state
    assert record.updated_at == 1.0
    assert not can_transition(from_state, to_state)


def test_succeeded_and_rejected_are_final() -> None:
    assert TRANSITIONS[S.SUCCEEDED] == frozenset()
    assert TRANSITIONS[S.REJECTED] == frozenset()
    # Other terminal states only leave through an explicit re-run (a new series from pending), or,
    # for a task that needs a person, a cancel.
    for state in TERMINAL_STATES - {S.SUCCEEDED, S.REJECTED, S.NEEDS_INPUT}:
        assert TRANSITIONS[state] == frozenset({S.PENDING})
    assert TRANSITIONS[S.NEEDS_INPUT] == frozenset({S.PENDING, S.CANCELLED})
