"""One trace per task across real processes: CLI submit -> coordinator -> every attempt on a worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ProcessPool, wait_until

pytestmark = pytest.mark.e2e


def spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_traced(processes: ProcessPool, tmp_path: Path) -> None:
    """A coordinator and worker w1, each writing its spans to a jsonl file, and the CLI too."""
    traced = {"OTEL_TRACES_EXPORTER": "jsonl"}
    processes.spawn(
        "coordinator", "coordinator", "start", env=traced | {"CLAW_TRACING_JSONL_PATH": str(tmp_path / "coord.jsonl")}
    )
    processes.spawn(
        "worker", "worker", "start", "--node-id", "w1",
        env=traced | {"CLAW_TRACING_JSONL_PATH": str(tmp_path / "worker.jsonl")},
    )  # fmt: skip
    wait_until(lambda: processes.run("nodes", "--json").returncode == 0, timeout_s=30, what="coordinator up")
    wait_until(lambda: "w1" in processes.run("nodes").stdout, timeout_s=30, what="worker up")
    processes.env.update(traced | {"CLAW_TRACING_JSONL_PATH": str(tmp_path / "cli.jsonl")})


def every_span(tmp_path: Path) -> list[dict[str, Any]]:
    """The spans the CLI, the coordinator and the worker have exported so far."""
    return spans(tmp_path / "cli.jsonl") + spans(tmp_path / "coord.jsonl") + spans(tmp_path / "worker.jsonl")


def test_a_retried_tasks_spans_share_one_trace_with_correct_parents(processes: ProcessPool, tmp_path: Path) -> None:
    start_traced(processes, tmp_path)
    result = processes.run(
        "submit",
        "fail",
        "--input",
        '{"message": "flaky", "retryable": true}',
        "--max-attempts",
        "2",
        "--wait",
        "--json",
    )
    assert result.returncode == 1, result.stderr
    [task] = json.loads(result.stdout)
    assert task["attempts"] == 2 and task["trace_id"]

    def all_spans() -> list[dict[str, Any]] | None:
        mine = [s for s in every_span(tmp_path) if s["trace_id"] == task["trace_id"]]
        return mine if sum(s["name"] == "claw.task.report" for s in mine) == 2 else None

    found = wait_until(all_spans, timeout_s=30, what="every span exported")
    by_id = {s["span_id"]: s for s in found}
    names = {s["span_id"]: (s["service"], s["name"]) for s in found}

    def parent(span: dict[str, Any]) -> tuple[str, str] | None:
        return names.get(span["parent_span_id"]) if span["parent_span_id"] else None

    [submit] = [s for s in found if s["name"] == "claw.submit"]
    [api] = [s for s in found if s["name"] == "claw.api.submit"]
    [admitted] = [s for s in found if s["name"] == "claw.task"]
    executes = sorted(
        (s for s in found if s["name"] == "claw.task.execute"), key=lambda s: s["attributes"]["claw.attempt"]
    )
    reports = [s for s in found if s["name"] == "claw.task.report"]
    assert submit["service"] == "claw-cli" and submit["parent_span_id"] is None
    assert parent(api) == ("claw-cli", "claw.submit") and api["service"] == "claw-coordinator"
    assert parent(admitted) == ("claw-coordinator", "claw.api.submit")
    assert admitted["attributes"]["claw.task_id"] == task["task_id"]
    assert [e["attributes"]["claw.attempt"] for e in executes] == [1, 2]
    assert all(parent(e) == ("claw-coordinator", "claw.task") and e["service"] == "claw-worker" for e in executes)
    assert [e["attributes"]["claw.outcome"] for e in executes] == ["retrying", "failed"]
    assert all(e["status"] == "ERROR" and e["attributes"]["claw.node_id"] == "w1" for e in executes)
    assert sorted(by_id[r["parent_span_id"]]["attributes"]["claw.attempt"] for r in reports) == [1, 2]

    # `claw task trace` joins the three files into one tree (printed for the closing note).
    files = [arg for name in ("cli", "coord", "worker") for arg in ("--spans", str(tmp_path / f"{name}.jsonl"))]
    shown = processes.run("task", "trace", task["task_id"], *files)
    assert shown.returncode == 0, shown.stderr
    print("\n" + shown.stdout)
    lines = shown.stdout.splitlines()
    assert lines[0] == f"trace {task['trace_id']} ({len(found)} spans)"
    tree = [(len(line) - len(line.lstrip())) // 2 for line in lines[1:]]
    labels = [line.strip().split(" ")[1] for line in lines[1:]]
    assert list(zip(tree, labels, strict=True)) == [
        (0, "claw.submit"),
        (1, "claw.api.submit"),
        (2, "claw.task"),
        (3, "claw.task.execute"),
        (4, "claw.task.report"),
        (3, "claw.task.execute"),
        (4, "claw.task.report"),
    ]
    assert "attempt=1 node_id=w1 outcome=retrying" in lines[4] and "ERROR" in lines[4]
    assert "attempt=2 node_id=w1 outcome=failed" in lines[6]


def test_each_task_of_a_batch_has_a_trace_of_its_own_linked_to_the_submit(
    processes: ProcessPool, tmp_path: Path
) -> None:
    start_traced(processes, tmp_path)
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(f'{{"i": {i}}}\n' for i in range(3)))
    result = processes.run("submit", "echo", "--input-file", str(batch), "--wait", "--json")
    assert result.returncode == 0, result.stderr
    task_ids = sorted(t["task_id"] for t in json.loads(result.stdout))
    shown = [processes.run("task", "show", task_id, "--json") for task_id in task_ids]
    trace_ids = {json.loads(r.stdout)["trace_id"] for r in shown}
    assert len(task_ids) == 3 and len(trace_ids) == 3

    def all_spans() -> list[dict[str, Any]] | None:
        found = every_span(tmp_path)
        return found if sum(s["name"] == "claw.task.report" for s in found) == 3 else None

    found = wait_until(all_spans, timeout_s=30, what="every span exported")
    [submit] = [s for s in found if s["name"] == "claw.submit"]
    [api] = [s for s in found if s["name"] == "claw.api.submit"]
    assert submit["trace_id"] == api["trace_id"] and submit["trace_id"] not in trace_ids
    admitted = [s for s in found if s["name"] == "claw.task"]
    assert {s["trace_id"] for s in admitted} == trace_ids
    assert sorted(s["attributes"]["claw.task_id"] for s in admitted) == task_ids
    for task_span in admitted:
        assert task_span["parent_span_id"] is None
        assert task_span["links"] == [{"trace_id": api["trace_id"], "span_id": api["span_id"]}]
        [execute] = [s for s in found if s["name"] == "claw.task.execute" and s["trace_id"] == task_span["trace_id"]]
        assert execute["parent_span_id"] == task_span["span_id"]


def test_the_cluster_traces_tasks_from_clients_that_record_nothing(processes: ProcessPool, tmp_path: Path) -> None:
    """A client without tracing still sends a trace context, marked not sampled: the cluster's own
    sampler decides (it records every task here), while a sampled context from a tracing client is
    followed as before."""
    start_traced(processes, tmp_path)
    plain = {k: v for k, v in processes.env.items() if not k.startswith("OTEL_") and k != "CLAW_TRACING_JSONL_PATH"}
    processes.env.clear()
    processes.env.update(plain)
    [untraced] = json.loads(processes.run("submit", "echo", "--input", '{"from": "plain"}', "--wait", "--json").stdout)
    processes.env.update({"OTEL_TRACES_EXPORTER": "jsonl", "CLAW_TRACING_JSONL_PATH": str(tmp_path / "cli.jsonl")})
    [traced] = json.loads(processes.run("submit", "echo", "--input", '{"from": "traced"}', "--wait", "--json").stdout)
    assert untraced["state"] == traced["state"] == "succeeded"

    cluster = {
        ("claw-coordinator", "claw.api.submit"),
        ("claw-coordinator", "claw.task"),
        ("claw-worker", "claw.task.execute"),
        ("claw-worker", "claw.task.report"),
    }

    def spans_of(trace_id: str, needed: set[tuple[str, str]]) -> set[tuple[str, str]] | None:
        found = {(s["service"], s["name"]) for s in every_span(tmp_path) if s["trace_id"] == trace_id}
        return found if needed <= found else None

    found = wait_until(lambda: spans_of(untraced["trace_id"], cluster), timeout_s=30, what="the plain client's task")
    assert found == cluster  # and no span of the client's own: it records nothing
    needed = cluster | {("claw-cli", "claw.submit")}
    wait_until(lambda: spans_of(traced["trace_id"], needed), timeout_s=30, what="the tracing client's task")


class FakeCollector:
    """An OTLP/HTTP trace receiver on loopback: decodes and keeps every exported span."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[dict[str, Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    service = next(
                        a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
                    )
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            collector.spans.append(
                                {
                                    "service": service,
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent_span_id": span.parent_span_id.hex() or None,
                                }
                            )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_claw_up_with_otlp_sends_one_connected_trace_to_a_collector(tmp_path: Path) -> None:
    import re
    import signal

    from tests.helpers import child_env

    collector = FakeCollector()
    otlp = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
    pool = ProcessPool(child_env(**otlp), tmp_path)
    try:
        up = pool.spawn("up", "up", "--workers", "1", "--data-dir", str(tmp_path / "data"), "--nats-port", "0",
                        "--monitor-port", "0", "--gateway", "off")  # fmt: skip
        match = wait_until(lambda: re.search(r"claw --nats (nats://\S+) submit", up.output()), timeout_s=60)
        creds = str(tmp_path / "data" / "auth" / "admin.creds")
        result = pool.run("--nats", match.group(1), "--creds", creds, "submit", "echo", "--wait", "--json")
        assert result.returncode == 0, result.stderr
        [task] = json.loads(result.stdout)
        trace_id = task["trace_id"]

        def connected() -> list[dict[str, Any]] | None:
            mine = [s for s in collector.spans if s["trace_id"] == trace_id]
            return mine if {s["service"] for s in mine} >= {"claw-cli", "claw-coordinator", "claw-worker"} else None

        found = wait_until(connected, timeout_s=30, what="spans of all three processes at the collector")
        ids = {s["span_id"] for s in found}
        roots = [s for s in found if s["parent_span_id"] is None]
        assert [r["name"] for r in roots] == ["claw.submit"]
        assert all(s["parent_span_id"] in ids for s in found if s is not roots[0])  # one connected tree
        up.popen.send_signal(signal.SIGTERM)
        assert up.popen.wait(60) == 0
    finally:
        pool.stop_all()
        collector.stop()
