"""A coordinator SIGKILLed in the middle of a 20-node run with a fan-out, and restarted: the run
completes, no node's task was dispatched or run twice (one attempt each, one task per node and item
in the database), and no node was skipped. Real `claw coordinator` and `claw worker` processes."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import ProcessPool, wait_until

ITEMS = 8


def workflow() -> dict[str, Any]:
    """20 nodes: a split, a fan-out of 8 naps (2 at a time), a join, then a chain of 17 more."""
    nodes: dict[str, Any] = {
        "split": {"skill": "echo", "input": {"items": list(range(ITEMS))}},
        "naps": {
            "skill": "sleep",
            "for_each": "nodes.split.output.items",
            "concurrency": 2,
            "input": {"seconds": 1.0, "item": "=item"},
        },
        "join": {"skill": "echo", "input": {"n": "=length(nodes.naps.output)"}},
    }
    previous = "join"
    for i in range(17):
        name = f"step{i:02d}"
        nodes[name] = (
            {"skill": "sleep", "input": {"seconds": 0.3}, "needs": [previous]}
            if i % 2
            else {"skill": "echo", "input": {"i": i, "before": f"=nodes.{previous}.state"}}
        )
        previous = name
    return {"name": "long", "nodes": nodes}


def show(processes: ProcessPool, run_id: str) -> dict[str, Any] | None:
    done = processes.run("workflow", "show", run_id, "--json")
    return json.loads(done.stdout) if done.returncode == 0 else None


def test_a_coordinator_sigkilled_mid_run_restarts_and_completes_with_no_node_run_twice(
    processes: ProcessPool, tmp_path: Path
) -> None:
    env = {**processes.env, "CLAW_COORDINATOR_LEASE_TTL_S": "3", "CLAW_COORDINATOR_LEASE_RENEW_INTERVAL_S": "0.5"}
    coordinator = processes.spawn("coordinator", "coordinator", "start", env=env)
    processes.spawn("worker", "worker", "start", "--node-id", "w1", "--concurrency", "4")
    wait_until(
        lambda: (r := processes.run("nodes", "--json")).returncode == 0 and len(json.loads(r.stdout)) == 1,
        timeout_s=60,
        interval_s=0.3,
        what="the worker online",
    )
    spec = tmp_path / "long.yaml"
    spec.write_text(yaml.safe_dump(workflow(), sort_keys=False))
    assert processes.run("workflow", "register", str(spec)).returncode == 0
    started = processes.run("workflow", "run", "long", "--json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run_id"]

    def mid_fan_out() -> bool:
        # Read from the database (a `claw` process per poll is slower than a nap).
        db = sqlite3.connect(f"file:{tmp_path / 'claw.db'}?mode=ro", uri=True)
        try:
            naps = db.execute("SELECT COUNT(*) FROM tasks WHERE skill = 'sleep' AND state = 'succeeded'").fetchone()
        finally:
            db.close()
        return 1 <= naps[0] <= ITEMS - 3

    wait_until(mid_fan_out, timeout_s=60, interval_s=0.1, what="the fan-out half way")
    coordinator.signal(signal.SIGKILL)
    coordinator.popen.wait(10)
    processes.spawn("coordinator", "coordinator", "start", env=env)

    def finished() -> dict[str, Any] | None:
        view = show(processes, run_id)
        return view if view is not None and view["state"] != "running" else None

    view = wait_until(finished, timeout_s=120, interval_s=0.3, what="the run to finish after the restart")
    assert view["state"] == "succeeded", view
    nodes = {n["name"]: n for n in view["nodes"]}
    assert len(nodes) == 20 and all(n["state"] == "succeeded" and n["source"] == "run" for n in nodes.values())
    assert nodes["naps"]["items"] == ITEMS and len(nodes["naps"]["task_ids"]) == ITEMS
    # No node ran twice: one attempt per task, one task per node (per item of the fan-out).
    assert nodes["naps"]["attempts"] == ITEMS
    assert all(n["attempts"] == 1 for name, n in nodes.items() if name != "naps")
    db = sqlite3.connect(tmp_path / "claw.db")
    try:
        tasks = db.execute("SELECT COUNT(*), SUM(attempts) FROM tasks").fetchone()
        kinds = [r[0] for r in db.execute("SELECT kind FROM events WHERE task_id = ?", (f"run:{run_id}",))]
    finally:
        db.close()
    assert tuple(tasks) == (19 + ITEMS, 19 + ITEMS)
    assert kinds.count("workflow.node_started") == 20 and kinds.count("workflow.node_succeeded") == 20
    assert kinds[-1] == "workflow.run_succeeded"
    join = processes.run("task", "show", nodes["join"]["task_ids"][0], "--json")
    assert json.loads(join.stdout)["result"] == {"n": ITEMS}
