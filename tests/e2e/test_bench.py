"""End to end: `scripts/bench.py --quick` runs the whole benchmark (its own nats-server, raw baseline,
clusters as real processes) and reports every figure; it checks that the benchmark works, not how
fast the cluster is."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import ROOT, child_env

pytestmark = pytest.mark.e2e

BENCH_TIMEOUT_S = 120  # --tracing and --replication each add a cluster run

PERCENTILES = ("p50", "p95", "p99")
REQUIRED_FIGURES = [
    ("raw", "throughput_tps"),
    *[("raw", "latency_ms", p) for p in PERCENTILES],
    ("cluster", "throughput_tps", "1"),
    ("cluster", "throughput_tps", "2"),
    *[
        ("cluster", key, p)
        for key in ("submit_latency_ms", "cli_submit_latency_ms", "e2e_latency_ms")
        for p in PERCENTILES
    ],
    ("cluster", "cli_process_ms", "p50"),
    *[("cluster", "rss_mb", key) for key in ("coordinator", "workers", "idle_worker")],
    *[("cluster", "cpu_s_per_1000", key) for key in ("coordinator", "workers", "nats")],
    ("cluster", "sqlite_bytes_per_100k"),
    ("ratio", "throughput"),
    ("ratio", "latency_p50"),
    ("meta", "cpu_count"),
    ("meta", "n"),
]
REQUIRED_META = ("date", "git_commit", "python", "nats_server", "workers")


def dig(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = report
    for key in path:
        assert isinstance(value, dict) and key in value, f"the report has no {'.'.join(path)}"
        value = value[key]
    return value


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/bench.py; on a hang, Ctrl-C it (so it stops its processes) before failing."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), *args],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=BENCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"the quick benchmark took more than {BENCH_TIMEOUT_S} s:\n{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def processes_using(path: str) -> list[psutil.Process]:
    """Processes whose command line, environment or working directory mentions `path`."""
    found = []
    for process in psutil.process_iter():
        try:
            mentions = [*process.cmdline(), *process.environ().values(), process.cwd()]
            if any(path in text for text in mentions):
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_quick_bench_reports_every_figure_and_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_bench("--quick", "--tracing", "--trace-sample-ratio", "0.5", "--replication", "--json", str(out))
    assert result.returncode == 0, result.stderr

    report = json.loads(out.read_text())
    for path in REQUIRED_FIGURES:
        value = dig(report, path)
        assert isinstance(value, int | float) and value > 0, f"{'.'.join(path)} = {value!r}"
    for key in REQUIRED_META:
        assert dig(report, ("meta", key)), f"meta.{key} is empty"
    assert report["meta"]["quick"] is True
    assert "raw JetStream" in result.stdout and "end to end, one in flight" in result.stdout
    # --tracing: about half the tasks were sampled (1,000 tasks: 500 +- 16 is 1 sd), and the sink got
    # all three spans (claw.task, execute, report) of every sampled task and nothing of the others
    # (a task's spans are kept or dropped together), plus a few spans of the processes' start.
    # The coordinator and both workers exported: a process that exits without flushing is named.
    tracing = report["tracing"]
    assert tracing["sample_ratio"] == 0.5
    assert 350 <= tracing["sampled_tasks"] <= 650, tracing
    assert 3 * tracing["sampled_tasks"] <= tracing["spans_exported"] <= 3 * tracing["sampled_tasks"] + 30, tracing
    exporting = sorted(name.split()[0] for name in tracing["spans_by_process"])
    assert exporting == ["claw-coordinator", "claw-worker", "claw-worker"], tracing["spans_by_process"]
    assert tracing["throughput_tps"] > 0 and tracing["ratio"] > 0
    assert "throughput traced / untraced" in result.stdout
    # --replication: the replicated run shipped commits, and its standby applied every one of them.
    replication = report["replication"]
    assert replication["commits_shipped"] > 0 and replication["ratio"] > 0, replication
    assert replication["standby_caught_up_s"] is not None, replication
    assert "throughput replicated / plain" in result.stdout

    workdir = re.search(r"starting nats-server in (\S+)", result.stderr)
    assert workdir, result.stderr
    assert not Path(workdir.group(1)).exists(), "the temporary directory was not removed"
    assert not processes_using(workdir.group(1)), "a process the benchmark started is still running"
