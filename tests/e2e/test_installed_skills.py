"""End to end: the README's installed-skill lines, with real `claw` processes (on uvloop, as users run
them) and two workers that share one skill cache, as `claw up` starts them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_cli_cluster import start_cluster
from tests.helpers import ProcessPool, wait_until

pytestmark = pytest.mark.e2e


def test_readme_text_stats_lines_install_and_run_on_two_workers_sharing_a_cache(processes: ProcessPool) -> None:
    start_cluster(processes, workers=2)
    installed = processes.run("skills", "install", "examples/skills/text_stats")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    first, second = installed.stdout.splitlines()
    assert first == "text.stats@1.0.0 installed and enabled"
    assert second.startswith("loaded by 2 of 2 online workers") and second.endswith(": w1, w2")

    result = processes.run(
        "submit", "text.stats", "--input-file", "examples/skills/text_stats/example_input.json", "--wait", "--json"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [task] = json.loads(result.stdout)
    assert task["state"] == "succeeded"
    assert task["result"]["top"] == [["to", 3], ["be", 2], ["the", 2]]
    assert (task["result"]["words"], task["result"]["lines"]) == (18, 2)


def test_install_names_a_worker_that_failed_to_load_the_skill_and_the_worker_retries(
    processes: ProcessPool, tmp_path: Path
) -> None:
    """w2's skill cache is blocked by a file where the skill's folder goes: the install exits 1 naming
    w2 and the error; once the file is gone, w2 loads the skill on its own, without a restart."""
    blocked = tmp_path / "w2-cache"
    blocked.mkdir()
    (blocked / "text.stats").write_text("in the way")
    processes.spawn("coordinator", "coordinator", "start")
    processes.spawn("worker", "worker", "start", "--node-id", "w1")
    processes.spawn("worker", "worker", "start", "--node-id", "w2", env={"CLAW_WORKER_SKILL_CACHE_DIR": str(blocked)})
    wait_until(lambda: len(online(processes)) == 2, timeout_s=30, interval_s=0.3, what="2 workers online")

    installed = processes.run("skills", "install", "examples/skills/text_stats", "--json")
    assert installed.returncode == 1
    error = json.loads(installed.stderr)  # with --json, the error is JSON too
    assert error["code"] == "not_loaded", error
    assert error["error"].startswith("text.stats@1.0.0 is installed, but not loaded by w2;")
    outcome = json.loads(installed.stdout)
    assert outcome["created"] and outcome["waited"]
    assert outcome["nodes"]["w1"] == {"version": "1.0.0", "state": "loaded"}
    assert outcome["nodes"]["w2"]["state"] == "failed" and "File exists" in outcome["nodes"]["w2"]["error"]

    (blocked / "text.stats").unlink()
    wait_until(lambda: "text.stats" in online(processes)["w2"], timeout_s=30, interval_s=0.3, what="w2 retries")
    again = processes.run("skills", "install", "examples/skills/text_stats")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[0] == "text.stats@1.0.0 was already installed with the same files"
    assert "loaded by 2 of 2 online workers" in again.stdout


def online(pool: ProcessPool) -> dict[str, list[str]]:
    """Online nodes and their skills (empty until the coordinator answers)."""
    result = pool.run("nodes", "--json")
    if result.returncode != 0:
        return {}
    return {n["node_id"]: n["skills"] for n in json.loads(result.stdout) if n["status"] == "online"}
