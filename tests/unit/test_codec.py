"""Wire codecs: round trips, the event union, schema evolution and version refusal."""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
import pytest

from common.events import TaskFailed, TaskProgress, TaskStarted, TaskSucceeded
from common.models import SCHEMA_VERSION, NodeHeartbeat, TaskMessage
from common.states import NodeStatus, Priority
from communication.codec import DecodeError, decode, decode_event, encode, is_json_object, nesting_exceeds


def _task(**changes: object) -> TaskMessage:
    fields = dict(
        task_id="01ABC", skill="llm.chat", input=msgspec.Raw(b'{"prompt": "hi"}'), priority=Priority.HIGH,
        timeout_s=30.0, max_attempts=3, submitted_at=1700000000.5,
    )  # fmt: skip
    fields.update(changes)
    return TaskMessage(**fields)  # type: ignore[arg-type]


def test_task_message_round_trips_and_keeps_input_bytes_verbatim() -> None:
    message = _task()
    data = encode(message)
    back = decode(data, TaskMessage)
    assert back.task_id == "01ABC" and back.priority == Priority.HIGH and back.v == SCHEMA_VERSION
    assert bytes(back.input) == b'{"prompt": "hi"}'  # not re-serialised: spacing kept


@pytest.mark.parametrize(
    "event",
    [
        TaskStarted(event_id="e1", task_id="t", attempt=1, node_id="n", at=1.0),
        TaskProgress(event_id="e2", task_id="t", attempt=1, node_id="n", at=2.0, percent=50.0, message="half"),
        TaskSucceeded(
            event_id="e3", task_id="t", attempt=1, node_id="n", at=3.0, result=msgspec.Raw(b"[1]"), started_at=1.0
        ),
        TaskFailed(
            event_id="e4", task_id="t", attempt=2, node_id="n", at=4.0, error_type="X", message="m", retryable=True
        ),
    ],
)
def test_event_union_decodes_to_the_variant_named_by_kind(event: object) -> None:
    data = encode(event)
    back = decode_event(data)
    assert type(back) is type(event)
    assert encode(back) == data


def test_unknown_fields_from_a_newer_sender_are_skipped() -> None:
    data = encode(_task())[:-1] + b',"new_field":{"x":1}}'
    assert decode(data, TaskMessage).task_id == "01ABC"


def test_a_newer_schema_version_is_refused_with_a_clear_error() -> None:
    data = encode(_task(v=SCHEMA_VERSION + 1))
    with pytest.raises(DecodeError, match="schema version 2.*upgrade"):
        decode(data, TaskMessage)


def test_malformed_message_raises_decode_error_naming_the_type() -> None:
    with pytest.raises(DecodeError, match="NodeHeartbeat"):
        decode(b'{"node_id": 5}', NodeHeartbeat)
    with pytest.raises(DecodeError, match="TaskEvent|kind"):
        decode_event(b'{"kind": "exploded", "task_id": "t"}')


def test_heartbeat_round_trip() -> None:
    beat = NodeHeartbeat(
        node_id="n1", hostname="h", pid=1, version="0.1.0", status=NodeStatus.ONLINE, skills=["echo"],
        labels={"gpu": "true"}, capacity=8, running=2, interval_s=1.0, started_at=1.0, sent_at=2.0,
    )  # fmt: skip
    assert decode(encode(beat), NodeHeartbeat) == beat


@pytest.mark.parametrize(("raw", "expected"), [(b"{}", True), (b'  \n{"a":1}', True), (b"[]", False), (b'"x"', False)])
def test_is_json_object(raw: bytes, expected: bool) -> None:
    assert is_json_object(msgspec.Raw(raw)) is expected


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _random_json(rng: random.Random, level: int = 0) -> Any:
    """Nested values whose strings are full of brackets, quotes and backslashes."""
    pieces = ["[", "]", "{", "}", '"', "\\", "a", "\n", "\u00e9"]
    roll = rng.random()
    if level > 30 or roll < 0.3:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))) if rng.random() < 0.5 else 7
    if roll < 0.65:
        return [_random_json(rng, level + 1) for _ in range(rng.randint(0, 3))]
    keys = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(0, 3))]
    return {key: _random_json(rng, level + 1) for key in keys}


def test_nesting_depth_is_measured_exactly_whatever_the_strings_hold() -> None:
    rng = random.Random(20240611)
    for _ in range(2000):
        value = _random_json(rng)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        depth = _depth(value)
        for limit in {0, 1, max(depth - 1, 0), depth, depth + 1}:
            assert nesting_exceeds(text, limit) == (depth > limit), (text, depth, limit)


def test_deep_nesting_is_a_decode_error_not_a_recursion_error() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    assert nesting_exceeds(deep, 64) and not nesting_exceeds(deep, 5000)
    assert nesting_exceeds(b"[" * 5000, 64)  # not JSON, but clearly deep
    assert not nesting_exceeds(b'{"a": "[[[[[[[[[[[["}', 1)
    with pytest.raises(DecodeError, match="nested too deeply"):
        decode_event(b'{"kind":"started","event_id":"e","task_id":"t","attempt":1,"node_id":"n","x":' + deep + b"}")
