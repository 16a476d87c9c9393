"""`claw workflow rerun RUN --from NODE`, as a user runs it: a node fails, the workflow is fixed (a
new version), the rerun reuses every upstream output by reference (no task runs again: counted in
the database) and runs the node and everything after it. Also `validate`, `register`, `show` and a
bad spec through the command line."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import yaml

from common.config import ClawConfig
from tests.helpers import ProcessPool, connected_client, running_coordinator, running_worker, wait_nodes_online


def spec(b_skill: str) -> dict[str, Any]:
    return {
        "name": "chain",
        "nodes": {
            "a": {"skill": "echo", "input": {"n": "=input.n"}},
            "side": {"skill": "echo", "input": {"s": 1}},
            "b": {"skill": b_skill, "input": {"from_a": "=nodes.a.output.n"}, "retry": {"max_attempts": 1}},
            "c": {"skill": "echo", "input": {"b": "=nodes.b.output", "side": "=nodes.side.output.s"}},
        },
    }


def task_count(config: ClawConfig) -> int:
    db = sqlite3.connect(Path(config.coordinator.db_path))
    try:
        return int(db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])
    finally:
        db.close()


async def claw(processes: ProcessPool, *args: str) -> Any:
    done = await asyncio.to_thread(processes.run, *args, timeout_s=90)
    return done


async def test_rerun_from_a_failed_node_reuses_upstream_outputs_and_runs_only_what_follows(
    config: ClawConfig, processes: ProcessPool, tmp_path: Path
) -> None:
    broken, fixed = tmp_path / "broken.yaml", tmp_path / "fixed.yaml"
    broken.write_text(yaml.safe_dump(spec("fail")))
    fixed.write_text(yaml.safe_dump(spec("echo")))
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        checked = await claw(processes, "workflow", "validate", str(broken))
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.splitlines()[0] == "chain: valid, 4 node(s)" and "  c <- b, side" in checked.stdout
        registered = await claw(processes, "workflow", "register", str(broken))
        assert registered.stdout.strip() == "chain v1 registered (4 nodes)"

        failed = await claw(processes, "workflow", "run", "chain", "--input", '{"n": 7}', "--wait", "--json")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        first = json.loads(failed.stdout)
        assert first["state"] == "failed" and "node 'b' failed" in first["error"]
        nodes = {n["name"]: n for n in first["nodes"]}
        assert [nodes[n]["state"] for n in ("a", "side", "b", "c")] == ["succeeded", "succeeded", "failed", "skipped"]
        assert task_count(config) == 3  # a, side, b

        again = await claw(processes, "workflow", "register", str(fixed))
        assert again.stdout.strip() == "chain v2 registered (4 nodes)"
        rerun = await claw(processes, "workflow", "rerun", first["run_id"], "--from", "b", "--wait", "--json")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        second = json.loads(rerun.stdout)
        assert (second["state"], second["version"], second["rerun_of"], second["from_node"]) == (
            "succeeded", 2, first["run_id"], "b",
        )  # fmt: skip
        renodes = {n["name"]: n for n in second["nodes"]}
        # Upstream nodes: the same tasks, by reference, not run again.
        for name in ("a", "side"):
            assert renodes[name]["source"] == "reused" and renodes[name]["task_ids"] == nodes[name]["task_ids"]
        assert renodes["b"]["source"] == "run" and renodes["b"]["task_ids"] != nodes["b"]["task_ids"]
        assert task_count(config) == 5  # + b and c, nothing else
        shown = await claw(processes, "workflow", "show", second["run_id"])
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].startswith(f"run {second['run_id']}: chain v2, succeeded")
        assert any(line.startswith("a ") and "succeeded (reused)" in line for line in lines)
        c_task = renodes["c"]["task_ids"][0]
        got = await claw(processes, "task", "show", c_task, "--json")
        assert json.loads(got.stdout)["result"] == {"b": {"from_a": 7}, "side": 1}

        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"name": "bad", "nodes": {"x": {"skill": "echo", "needs": ["y"]}}}))
        refused = await claw(processes, "workflow", "register", str(bad))
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert refused.stderr.strip() == "error: node 'x': needs 'y', but there is no node 'y'"
        missing = await claw(processes, "workflow", "rerun", first["run_id"], "--from", "nope")
        assert missing.returncode != 0 and "has no node 'nope'" in missing.stderr


async def test_every_workflow_command_answers_json_and_its_errors_are_json(
    config: ClawConfig, processes: ProcessPool, tmp_path: Path
) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(yaml.safe_dump({"name": "j", "nodes": {"a": {"skill": "echo"}, "b": {"skill": "sleep",
                    "input": {"seconds": 30}, "needs": ["a"]}}}))  # fmt: skip
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)

        async def as_json(*args: str) -> Any:
            done = await claw(processes, *args, "--json")
            assert done.returncode == 0, (args, done.stderr)
            return json.loads(done.stdout)

        assert (await as_json("workflow", "validate", str(flow)))["order"] == ["a", "b"]
        assert (await as_json("workflow", "register", str(flow)))["version"] == 1
        run = await as_json("workflow", "run", "j", "--run-id", "my-run-1")
        assert run["run_id"] == "my-run-1" and not run["duplicate"]
        assert (await as_json("workflow", "run", "j", "--run-id", "my-run-1"))["duplicate"] is True
        listed = await as_json("workflow", "list")
        assert [w["name"] for w in listed["workflows"]] == ["j"]
        assert [r["run_id"] for r in listed["runs"]] == ["my-run-1"]
        shown = await as_json("workflow", "show", "my-run-1")
        assert [n["name"] for n in shown["nodes"]] == ["a", "b"]
        cancelled = await as_json("workflow", "cancel", "my-run-1", "--reason", "enough")
        assert cancelled["state"] == "cancelled" and cancelled["error"] == "enough"
        watched = await claw(processes, "workflow", "watch", "my-run-1", "--json")
        assert watched.returncode == 1  # it did not succeed
        lines = [json.loads(line) for line in watched.stdout.splitlines()]
        assert lines[-1] == {"run_id": "my-run-1", "state": "cancelled", "error": "enough"}

        errors = {
            ("workflow", "show", "nosuch"): "workflow_not_found",
            ("workflow", "run", "nosuch"): "workflow_not_found",
            ("workflow", "register", str(tmp_path / "missing.yaml")): "invalid_input",
            ("workflow", "run", "j", "--input", "[1]"): "invalid_input",
            ("workflow", "cancel", "my-run-1"): "invalid_input",
        }
        for args, code in errors.items():
            done = await claw(processes, *args, "--json")
            assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr, (args, done.stderr)
            [line] = done.stderr.splitlines()
            assert json.loads(line)["code"] == code, (args, line)
