"""The in-memory state of one workflow run, and the deterministic ids of its node tasks.

A run's nodes move `waiting -> running -> succeeded | failed | skipped | cancelled`. A running node
has `items` tasks (1, or one per item of its fan-out); item `i`'s task id is derived from the run id,
the node's name and `i` (`node_task_id`), so dispatching a node again - after a coordinator restart,
or a submit that failed - submits the same task id, which the submit pipeline answers with the
existing task: a node's task is never dispatched twice.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec

from coordinator.tenants.identity import DEFAULT_TENANT
from coordinator.workflows.validate import CompiledWorkflow

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32, as ULIDs
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


_decode = msgspec.json.Decoder()


class RunState(StrEnum):
    """Where a run is."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class NodeState(StrEnum):
    """Where a node of a run is."""

    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


NODE_DONE = frozenset({NodeState.SUCCEEDED, NodeState.FAILED, NodeState.SKIPPED, NodeState.CANCELLED})


def node_task_id(run_id: str, salt: str, created_at: float, node: str, item: int | None) -> str:
    """The task id of a node's item: a ULID dated at the run's creation, its random part a digest of
    (run, its secret salt, node, item) - the same every time it is computed, unique across runs and
    nodes, and unguessable before the node starts: a client that could compute it could submit a
    task of its own under that id first, and its result would pass for the node's output."""
    key = f"{run_id}\0{salt}\0{node}\0{'' if item is None else item}".encode()
    random = int.from_bytes(hashlib.sha256(key).digest()[:10], "big")
    value = (int(created_at * 1000) << 80) | random
    pairs = []
    for _ in range(13):  # two characters (10 bits) at a time
        pairs.append(_PAIRS[value & 1023])
        value >>= 10
    return "".join(reversed(pairs))


@dataclass(slots=True)
class NodeRun:
    """One node of a run."""

    name: str
    state: NodeState = NodeState.WAITING
    # Tasks by item (0 for a node without fan-out); reused and cached nodes point at others' tasks.
    task_ids: dict[int, str] = field(default_factory=dict)
    items: int | None = None
    fan_out: bool = False
    source: str = "run"
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    # Runtime only: the item values of a fan-out, item outcomes and outputs, items in flight.
    item_values: list[Any] = field(default_factory=list)
    done: dict[int, str] = field(default_factory=dict)
    outputs: dict[int, Any] = field(default_factory=dict)
    inflight: set[int] = field(default_factory=set)
    output: Any = None
    output_loaded: bool = False
    cache_key: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the node reached an end (succeeded, failed, skipped, cancelled)."""
        return self.state in NODE_DONE

    def ordered_task_ids(self) -> list[str]:
        """Its task ids in item order."""
        return [self.task_ids[i] for i in sorted(self.task_ids)]


@dataclass(slots=True)
class Run:
    """One run of a workflow version."""

    run_id: str
    name: str
    version: int
    flow: CompiledWorkflow
    input: dict[str, Any]
    created_at: float
    updated_at: float
    state: RunState = RunState.RUNNING
    finished_at: float | None = None
    error: str | None = None
    trigger: str | None = None
    submitter: str | None = None
    rerun_of: str | None = None
    from_node: str | None = None
    trace_id: str | None = None
    traceparent: str | None = None
    salt: str = field(default_factory=lambda: secrets.token_hex(16))
    # Whose run it is: its node tasks are this tenant's.
    tenant: str = DEFAULT_TENANT
    # Runtime only: the caller chose the id (it may exist already).
    id_chosen: bool = False
    nodes: dict[str, NodeRun] = field(default_factory=dict)

    def task_id(self, node: str, item: int | None) -> str:
        """The deterministic task id of a node's item in this run."""
        return node_task_id(self.run_id, self.salt, self.created_at, node, item)


def decode_result(text: str | None) -> Any:
    """A task's stored result as a value (text that is not JSON stays text)."""
    if text is None:
        return None
    try:
        return _decode.decode(text)
    except msgspec.DecodeError:
        return text
