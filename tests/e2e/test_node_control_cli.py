"""End to end: `claw node pause|drain|resume` with real processes, shown in `claw nodes`, kept across a
coordinator restart."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_cli_cluster import start_cluster
from tests.helpers import ProcessPool, wait_until

pytestmark = pytest.mark.e2e


def node_row(pool: ProcessPool, node_id: str) -> dict[str, object]:
    result = pool.run("nodes", "--json")
    assert result.returncode == 0, result.stderr
    return next(n for n in json.loads(result.stdout) if n["node_id"] == node_id)


def task_state(pool: ProcessPool, task_id: str) -> str:
    return str(json.loads(pool.run("task", "show", task_id, "--json").stdout)["state"])


def test_pause_drain_and_resume_a_node_through_the_cli(processes: ProcessPool) -> None:
    start_cluster(processes, workers=1)
    paused = processes.run("node", "pause", "w1")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("w1 paused: it pulls no tasks, 0 running finish; `claw node resume w1`")
    table = processes.run("nodes").stdout.splitlines()
    assert table[1].split()[:2] == ["w1", "paused"]

    [held] = json.loads(processes.run("submit", "echo", "--input", '{"a": 1}', "--json").stdout)
    beats = node_row(processes, "w1")["last_seen"]
    # Two more heartbeats of the paused node, and the task still waits.
    wait_until(lambda: float(node_row(processes, "w1")["last_seen"]) > float(beats) + 0.6, what="two beats")  # type: ignore[arg-type]
    assert task_state(processes, held["task_id"]) == "queued"

    resumed = processes.run("node", "resume", "w1", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) | {"running": 0} == {
        "node_id": "w1", "control": "active", "status": "online", "running": 0, "confirmed": True, "changed": True,
    }  # fmt: skip
    wait_until(lambda: task_state(processes, held["task_id"]) == "succeeded", what="the held task runs")

    [sleeping] = json.loads(processes.run("submit", "sleep", "--input", '{"seconds": 6}', "--json").stdout)
    wait_until(lambda: task_state(processes, sleeping["task_id"]) == "running", what="the sleep task runs")
    drained = processes.run("node", "drain", "w1", "--wait", "--json", timeout_s=60)
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout)["status"] == "drained"
    assert task_state(processes, sleeping["task_id"]) == "succeeded"
    assert processes.run("nodes").stdout.splitlines()[1].split()[:2] == ["w1", "drained"]

    coordinator = next(p for p in processes.processes if p.name == "coordinator")
    assert coordinator.stop() == 0
    processes.spawn("coordinator", "coordinator", "start")
    wait_until(lambda: processes.run("nodes", "--json").returncode == 0, timeout_s=30, what="the coordinator is back")
    assert node_row(processes, "w1")["control"] == "drained"
    wait_until(lambda: node_row(processes, "w1")["status"] == "drained", what="w1 beats, still drained")

    unknown = processes.run("node", "pause", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr == "error: no node called 'nope' has registered; `claw nodes` shows them\n"
