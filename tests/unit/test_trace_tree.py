"""`claw task trace`'s reading of jsonl span files: joined by trace id, orphans as roots, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.trace_tree import load_spans, span_tree
from common.errors import ConfigError


def span(name: str, span_id: str, parent: str | None, start_ms: float, trace: str = "t1", attempt: int = 0) -> str:
    return json.dumps(
        {
            "name": name,
            "service": "svc",
            "trace_id": trace,
            "span_id": span_id,
            "parent_span_id": parent,
            "start_ns": int(start_ms * 1e6),
            "end_ns": int((start_ms + 1) * 1e6),
            "status": "UNSET",
            "attributes": {"claw.attempt": attempt} if attempt else {},
            "kind": "INTERNAL",
            "events": [],
        }
    )


def test_spans_from_several_files_join_into_one_tree_by_trace_id(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(
        span("root", "r", None, 0) + "\n" + span("other", "x", None, 0, trace="t2") + "\n"
    )
    (tmp_path / "b.jsonl").write_text(
        span("late", "c2", "r", 900, attempt=2) + "\n" + span("early", "c1", "r", 5, attempt=1) + "\n\n"
    )
    found = load_spans([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], "t1")
    assert span_tree(found) == [
        "svc: root at +0.0 ms, took 1.0 ms",
        "  svc: early at +5.0 ms, took 1.0 ms attempt=1",
        "  svc: late at +900.0 ms, took 1.0 ms attempt=2",
    ]


def test_a_span_whose_parent_is_in_a_missing_file_is_shown_as_a_root(tmp_path: Path) -> None:
    (tmp_path / "w.jsonl").write_text(span("execute", "e", "not-here", 3) + "\n")
    assert span_tree(load_spans([tmp_path / "w.jsonl"], "t1")) == ["svc: execute at +0.0 ms, took 1.0 ms"]


def test_a_file_that_is_not_spans_or_missing_is_named(tmp_path: Path) -> None:
    (tmp_path / "log.jsonl").write_text(span("ok", "a", None, 0) + "\n" + '{"event": "a log line"}\n')
    with pytest.raises(ConfigError, match=r"log.jsonl:2 is not a span of the jsonl exporter"):
        load_spans([tmp_path / "log.jsonl"], "t1")
    with pytest.raises(ConfigError, match=r"cannot read spans from .*nowhere.jsonl"):
        load_spans([tmp_path / "nowhere.jsonl"], "t1")


def test_a_batch_tasks_link_to_its_submit_request_is_shown_under_its_root(tmp_path: Path) -> None:
    record = json.loads(span("claw.task", "r", None, 0))
    record["links"] = [{"trace_id": "b" * 32, "span_id": "a" * 16}]
    (tmp_path / "c.jsonl").write_text(json.dumps(record) + "\n" + span("execute", "e", "r", 2) + "\n")
    assert span_tree(load_spans([tmp_path / "c.jsonl"], "t1")) == [
        "svc: claw.task at +0.0 ms, took 1.0 ms",
        f"  (linked to span {'a' * 16} of trace {'b' * 32})",
        "  svc: execute at +2.0 ms, took 1.0 ms",
    ]
