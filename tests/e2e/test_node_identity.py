"""End to end: one live worker process per node id. A second `claw worker start` with the id of a
live node is refused; once that node's process is dead (SIGKILL), a new one with its id starts."""

from __future__ import annotations

import json
import signal

import pytest

from tests.helpers import ProcessPool, wait_until

pytestmark = pytest.mark.e2e


def nodes(pool: ProcessPool) -> list[dict[str, object]]:
    """`claw nodes --json` (empty until the coordinator answers)."""
    result = pool.run("nodes", "--json")
    return json.loads(result.stdout) if result.returncode == 0 else []


def online_pid(pool: ProcessPool, node_id: str) -> object:
    """The pid `node_id` runs as, when it is online."""
    return next((n["pid"] for n in nodes(pool) if n["node_id"] == node_id and n["status"] == "online"), None)


def test_a_second_worker_with_a_live_nodes_id_is_refused_and_a_restart_after_a_kill_starts(
    processes: ProcessPool,
) -> None:
    processes.spawn("coordinator", "coordinator", "start")
    first = processes.spawn("worker", "worker", "start", "--node-id", "w1")
    wait_until(lambda: online_pid(processes, "w1") == first.popen.pid, timeout_s=30, what="w1 online")

    second = processes.run("worker", "start", "--node-id", "w1", timeout_s=30)
    assert second.returncode == 1
    assert second.stderr.splitlines()[-1].startswith(
        f"error: node id 'w1' is in use by a live worker (pid {first.popen.pid} on "
    )
    assert "Traceback" not in second.stdout + second.stderr
    assert first.alive
    assert [n["node_id"] for n in nodes(processes)] == ["w1"]
    assert online_pid(processes, "w1") == first.popen.pid

    first.signal(signal.SIGKILL)
    first.popen.wait()
    restarted = processes.spawn("worker", "worker", "start", "--node-id", "w1")
    wait_until(lambda: online_pid(processes, "w1") == restarted.popen.pid, timeout_s=30, what="restarted w1 online")
    assert restarted.alive
