"""End to end: `/metrics` of a `claw coordinator start` and `claw up`."""

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


def test_up_prints_the_metrics_url_and_serves_it(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    try:
        up = pool.spawn("up", "up", "--workers", "0", "--data-dir", str(tmp_path / "data"), "--nats-port", "0",
                        "--monitor-port", "0", "--metrics-port", "0")  # fmt: skip
        match = wait_until(
            lambda: re.search(r"Prometheus metrics: (http://\S+/metrics)", up.output()), timeout_s=60, what="banner"
        )
        assert "claw_nodes_online" in get_metrics(match.group(1))
        up.popen.send_signal(signal.SIGTERM)
        assert up.popen.wait(60) == 0
    finally:
        pool.stop_all()
