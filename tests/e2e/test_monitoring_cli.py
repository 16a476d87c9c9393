"""End to end: `/metrics` of a `claw coordinator start` and `claw up`, and `claw status --window`."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ClawProcess, ProcessPool, child_env, wait_until

pytestmark = pytest.mark.e2e


def get_metrics(url: str) -> dict[str, float]:
    """Sample name with labels (as Prometheus writes them) -> value."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def logged_metrics_port(process: ClawProcess) -> int | None:
    for line in process.output().splitlines():
        if '"metrics.serving"' in line:
            return int(json.loads(line)["port"])
    return None


def test_coordinator_start_with_metrics_port_0_serves_metrics(processes: ProcessPool) -> None:
    coordinator = processes.spawn("coordinator", "coordinator", "start", "--metrics-port", "0")
    port = wait_until(lambda: logged_metrics_port(coordinator), timeout_s=30, what="metrics.serving in the log")
    samples = get_metrics(f"http://127.0.0.1:{port}/metrics")
    assert samples["claw_nodes_online"] == 0
    assert samples['claw_tasks{state="succeeded"}'] == 0
    assert samples["claw_dlq_messages"] == 0
    status = processes.run("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["metrics_port"] == port
    assert f":{port}/metrics" in processes.run("status").stdout


def test_status_window_shows_the_rates_and_an_alert(processes: ProcessPool) -> None:
    alerting = {"CLAW_COORDINATOR_ALERT_MIN_TASKS": "4", "CLAW_COORDINATOR_ALERT_INTERVAL_S": "0.2"}
    coordinator = processes.spawn("coordinator", "coordinator", "start", env=alerting)
    processes.spawn("worker", "worker", "start", "--node-id", "w1", "--skills", "echo,fail")
    wait_until(lambda: processes.run("submit", "echo", "--wait").returncode == 0, timeout_s=30, what="a first echo")
    assert processes.run("submit", "echo", "--wait").returncode == 0
    for _ in range(2):
        assert processes.run("submit", "fail", "--input", '{"message": "no"}', "--wait").returncode == 1

    def status_with_alert() -> str:
        out = processes.run("status", "--window", "15m").stdout
        return out if "ALERT failure_rate" in out else ""

    # 2 of 4 failed: failure 50 % > 20 %, completion 50 % < 80 %; judged every 0.2 s.
    shown = wait_until(status_with_alert, timeout_s=20, what="the failure alert in claw status")
    assert "last 15m:" in shown
    assert re.search(r"finished\s+4 \(2 succeeded, 2 dead\)", shown), shown
    assert re.search(r"completion\s+50\.0 %", shown), shown
    assert re.search(r"failure\s+50\.0 %", shown), shown
    assert re.search(r"run time\s+mean .*, p95 .* \(succeeded tasks\)", shown), shown
    assert re.search(r"dead letters\s+2 in the DLQ", shown), shown
    assert "failure rate 50.0 % is above 20.0 %: 2 of the 4 tasks that finished in the last 1h failed" in shown
    assert "ALERT completion_rate" in shown

    status = json.loads(processes.run("status", "--window", "15m", "--json").stdout)
    assert status["window"]["window_s"] == 900
    assert (status["window"]["completion_rate"], status["window"]["failure_rate"]) == (0.5, 0.5)
    assert sorted(a["name"] for a in status["alerts"]) == ["completion_rate", "failure_rate"]
    fired = [json.loads(line) for line in coordinator.output().splitlines() if '"alert.firing"' in line]
    assert sorted((f["alert"], f["level"]) for f in fired) == [
        ("completion_rate", "warning"),
        ("failure_rate", "warning"),
    ]

    bad = processes.run("status", "--window", "0")
    assert bad.returncode == 1 and bad.stderr.strip() == "error: --window must be longer than 0, e.g. 15m or 1h"


def test_up_prints_the_metrics_url_and_serves_it(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    try:
        up = pool.spawn("up", "up", "--workers", "0", "--data-dir", str(tmp_path / "data"), "--nats-port", "0",
                        "--monitor-port", "0", "--metrics-port", "0", "--gateway", "off")  # fmt: skip
        match = wait_until(
            lambda: re.search(r"Prometheus metrics: (http://\S+/metrics)", up.output()), timeout_s=60, what="banner"
        )
        assert "claw_nodes_online" in get_metrics(match.group(1))
        up.popen.send_signal(signal.SIGTERM)
        assert up.popen.wait(60) == 0
    finally:
        pool.stop_all()
