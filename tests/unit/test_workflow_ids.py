"""A node task's id: the same every time it is computed (so a dispatch repeated after a crash finds
the task), a valid ULID dated at the run's creation (admission accepts it), different for every run,
secret, node and item."""

from __future__ import annotations

from common.ids import implausible_id_reason, is_ulid, ulid_time_ms
from coordinator.workflows.runs import node_task_id

CREATED = 1_796_460_858.205


def test_a_node_task_id_is_a_stable_ulid_of_the_runs_creation() -> None:
    first = node_task_id("run-1", "salt", CREATED, "fetch", None)
    assert first == node_task_id("run-1", "salt", CREATED, "fetch", None)
    assert is_ulid(first) and ulid_time_ms(first) == 1_796_460_858_205
    assert implausible_id_reason(first, now_s=CREATED + 1, max_future_s=60) is None


def test_every_part_changes_the_id() -> None:
    base = ("run-1", "salt", CREATED, "chapters", 0)
    variants = [
        ("run-2", "salt", CREATED, "chapters", 0),
        ("run-1", "other", CREATED, "chapters", 0),
        ("run-1", "salt", CREATED, "polish", 0),
        ("run-1", "salt", CREATED, "chapters", 1),
        ("run-1", "salt", CREATED, "chapters", None),
    ]
    ids = {node_task_id(*base)} | {node_task_id(*v) for v in variants}  # type: ignore[arg-type]
    assert len(ids) == 1 + len(variants)
