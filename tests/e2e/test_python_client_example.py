"""examples/python_client.py, which docs/Python_client.md walks through, runs against a real cluster."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT, ProcessPool, wait_until

pytestmark = pytest.mark.e2e

ID = r"[0-9A-Z]{26}"


def test_the_python_client_example_runs_against_a_cluster(processes: ProcessPool) -> None:
    processes.spawn("coordinator", "coordinator", "start")
    processes.spawn("worker", "worker", "start", "--node-id", "w1", "--concurrency", "4")
    wait_until(lambda: '"online"' in processes.run("nodes", "--json").stdout, timeout_s=30, what="a worker online")

    # As a user runs it: its own process, the cluster found through CLAW_NATS_URL / CLAW_NATS_PREFIX.
    result = subprocess.run(
        [sys.executable, "examples/python_client.py"],
        cwd=ROOT, env=processes.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(rf'echo {ID}: succeeded, result {{"hello": ?"world"}}', lines[0]), lines
    progress = [line for line in lines if re.fullmatch(rf"sleep {ID}: \d+% sleeping", line)]
    assert len(progress) >= 1 and progress[-1].endswith("100% sleeping"), lines
    assert re.search(rf"^sleep {ID}: succeeded$", result.stdout, re.M)
    assert "batch: 5 of 5 succeeded" in lines
    assert re.search(rf"^cancel {ID}: cancelled$", result.stdout, re.M)
    assert lines[-1].startswith("refused (unknown_skill): unknown skill 'no.such.skill'")

    down = subprocess.run(
        [sys.executable, "examples/python_client.py", "--nats", "nats://127.0.0.1:1"],
        cwd=ROOT, env=processes.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert down.returncode == 1
    assert down.stderr.startswith("error: cannot reach NATS at nats://127.0.0.1:1") and down.stderr.count("\n") == 1
