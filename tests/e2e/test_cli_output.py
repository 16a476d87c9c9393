"""What `claw` prints, as a Celery or NATS CLI user expects it: tables that fit a terminal, `--json`
on every command with errors as JSON too, clear messages, and readable logs on a terminal."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, ProcessPool, PtyProcess, child_env, wait_until

pytestmark = pytest.mark.e2e

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def start_cluster(pool: ProcessPool, *workers: list[str]) -> None:
    pool.spawn("coordinator", "coordinator", "start")
    for i, extra in enumerate(workers or ([],), start=1):
        pool.spawn("worker", "worker", "start", "--node-id", f"w{i}", "--concurrency", "4", *extra)

    def online() -> bool:
        result = pool.run("nodes", "--json")
        return result.returncode == 0 and sum(n["status"] == "online" for n in json.loads(result.stdout)) == len(
            workers or ([],)
        )

    wait_until(online, timeout_s=30, interval_s=0.3, what="workers online")


def json_object_with(text: str, key: str) -> dict[str, Any] | None:
    """The first JSON object in `text` (log lines and answers mixed) that has `key`."""
    decoder = json.JSONDecoder()
    for start in [m.start() for m in re.finditer(r"(?m)^\{", text)]:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict) and key in value:
            return value
    return None


def run_json(pool: ProcessPool, *args: str) -> Any:
    result = pool.run(*args, "--json")
    assert result.returncode == 0, (args, result.stderr)
    return json.loads(result.stdout)


def test_status_hides_idle_queues_and_nodes_fit_100_columns(processes: ProcessPool) -> None:
    start_cluster(processes, ["--label", "gpu=true", "--label", "zone=eu-west-1"], [])
    [task] = run_json(processes, "submit", "sleep", "--input", '{"seconds": 60}')
    wait_until(
        lambda: run_json(processes, "task", "show", task["task_id"])["state"] == "running", timeout_s=30, what="running"
    )

    status = processes.run("status").stdout
    queues = status.split("\nqueues")[1].split("\n\n")[0].splitlines()
    every = len(run_json(processes, "status")["queues"])  # JSON keeps every queue
    assert queues[0] == f" ({every - 1} idle hidden; --all lists them):"
    assert [line.split() for line in queues[2:]] == [["sleep", "normal", "0", "1"]]
    listed = processes.run("status", "--all").stdout.split("\nqueues:\n")[1].split("\n\n")[0].splitlines()
    assert len(listed) == every + 1 and every >= 33  # the header and every skill x priority

    table = processes.run("nodes").stdout.splitlines()
    assert len(table) == 3 and all(len(line) <= 100 for line in table), table
    assert re.search(r"echo,fail,\S+ \+\d+", table[1])  # skills summarised
    paused = run_json(processes, "node", "pause", "w1")
    assert paused["node_id"] == "w1" and paused["control"] == "paused"
    table = processes.run("nodes").stdout.splitlines()
    assert all(len(line) <= 100 for line in table), table
    assert re.match(r"w1\s+(online -> paused|paused)\s", table[1]), table  # the control state shows
    assert run_json(processes, "node", "resume", "w1")["control"] == "active"
    wide = processes.run("nodes", "--wide").stdout
    assert "python.exec" in wide and "shell.exec" in wide and "gpu=true,zone=eu-west-1" in wide and "VERSION" in wide
    processes.run("task", "cancel", task["task_id"])


def test_every_command_answers_json_and_errors_are_json_with_json(processes: ProcessPool, tmp_path: Path) -> None:
    start_cluster(processes)
    [task] = run_json(processes, "submit", "echo", "--input", '{"a": 1}', "--wait")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"blob": "y" * 400_000}))
    [large] = run_json(processes, "submit", "echo", "--input-file", str(big), "--wait")
    task_id = task["task_id"]
    answers = {
        "nodes": run_json(processes, "nodes"),
        "status": run_json(processes, "status"),
        "approvals": run_json(processes, "approvals"),
        "task show": run_json(processes, "task", "show", task_id),
        "task list": run_json(processes, "task", "list"),
        "dlq list": run_json(processes, "dlq", "list"),
        "skills list": run_json(processes, "skills", "list"),
        "skills show": run_json(processes, "skills", "show", "echo"),
        "skills search": run_json(processes, "skills", "search", "echo"),
        "skills validate": run_json(processes, "skills", "validate", str(ROOT / "examples/skills/text_stats")),
        "guard check": run_json(processes, "guard", "check", "echo"),
        "audit verify": run_json(processes, "audit", "verify"),
        "quarantine list": run_json(processes, "quarantine", "list"),
        "node drain": run_json(processes, "node", "drain", "w1", "--wait", "--timeout", "30"),
        "node resume": run_json(processes, "node", "resume", "w1"),
        "skills install": run_json(processes, "skills", "install", str(ROOT / "examples/skills/text_stats")),
        "artifacts list": run_json(processes, "artifacts", "list", large["task_id"]),
        "artifacts get": run_json(
            processes, "artifacts", "get", large["task_id"], "result.json", "-o", str(tmp_path / "out.json")
        ),
    }
    assert answers["task show"]["result"] == {"a": 1} and answers["skills validate"]["name"] == "text.stats"
    assert answers["artifacts get"]["path"] == str(tmp_path / "out.json")
    assert answers["quarantine list"] == [] and answers["node drain"]["status"] == "drained"
    assert answers["skills install"]["entry"]["name"] == "text.stats" and answers["skills install"]["waited"]
    assert answers["skills install"]["nodes"]["w1"]["state"] == "loaded"
    watched = processes.run("task", "watch", task_id, "--json")
    assert watched.returncode == 0, watched.stderr
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert lines[-1]["kind"] == "end" and lines[-1]["task"]["state"] == "succeeded"
    assert {"submitted", "succeeded"} <= {line["kind"] for line in lines}

    empty = tmp_path / "empty.json"
    empty.write_text("")
    errors = {
        ("submit", "nope"): ("unknown_skill", 1),
        ("task", "show"): ("usage", 2),
        ("task", "show", "01NOSUCHTASK00000000000000"): ("not_found", 1),
        ("--nats", "nats://127.0.0.1:1", "status"): ("nats_unavailable", 1),
        ("submit", "echo", "--input-file", str(empty)): ("invalid_input", 1),
        ("status", "--window", "0"): ("usage", 1),
        ("node", "pause", "nosuch"): ("node_not_found", 1),
        ("quarantine", "list", "--limit", "0"): ("usage", 2),
        ("skills", "install", str(tmp_path / "missing")): ("invalid_manifest", 1),
        ("task", "list", "--limit", "x"): ("usage", 2),
    }
    for args, (code, exit_code) in errors.items():
        result = processes.run(*args, "--json")
        assert result.returncode == exit_code, (args, result.stderr)
        assert result.stdout == "" and "Traceback" not in result.stderr
        [line] = result.stderr.splitlines()
        error = json.loads(line)
        assert set(error) == {"error", "code"} and error["code"] == code, (args, error)
    human = processes.run("submit", "echo", "--input-file", str(empty))
    assert human.stderr == f'error: {empty} is empty; it must hold a JSON object like {{"text": "hi"}}\n'


@pytest.mark.parametrize("role", ["worker", "coordinator"])
def test_a_process_on_a_terminal_logs_for_people_and_json_when_asked(processes: ProcessPool, role: str) -> None:
    env = {k: v for k, v in processes.env.items() if k != "CLAW_LOG_FORMAT"}
    config = str(ROOT / "config" / f"{role}.yaml")  # the example config, as the RUNBOOK suggests
    for json_flag in ([], ["--json"]):
        process = PtyProcess.spawn(role, "start", "--config", config, *json_flag, env=env)
        try:
            ready = f"{role}.ready"
            wait_until(lambda p=process, r=ready: r in p.output(), timeout_s=30, what=ready)  # type: ignore[misc]
        finally:
            process.stop()
        lines = [ANSI.sub("", line) for line in process.output().splitlines() if ready in line]
        if json_flag:
            assert json.loads(lines[0])["event"] == ready
        else:
            assert not lines[0].startswith("{") and re.search(rf"\[info\s*\] {re.escape(ready)}", lines[0])
    # A log file, not a terminal: JSON lines (with the format left to the config's "auto").
    piped = processes.spawn(role, role, "start", "--config", config, env={"CLAW_LOG_FORMAT": "auto"})
    wait_until(lambda: f"{role}.ready" in piped.output(), timeout_s=30, what="ready in the log file")
    assert json.loads(next(line for line in piped.output().splitlines() if f"{role}.ready" in line))["level"] == "info"


def test_nats_start_json_prints_where_it_listens_as_json(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    try:
        server = pool.spawn(
            "nats", "nats", "start", "--port", "0", "--http-port", "0", "--store-dir", str(tmp_path / "s"), "--json"
        )
        ready = wait_until(lambda: json_object_with(server.output(), "nats_url"), timeout_s=30, what="the answer")
        assert ready["nats_url"].startswith("nats://127.0.0.1:") and ready["store_dir"] == str(tmp_path / "s")
        assert ready["auth_dir"] == str(tmp_path / "auth")  # authentication on: the admin's credentials there
        admin = str(tmp_path / "auth" / "admin.creds")
        assert "no coordinator is answering" in pool.run("--nats", ready["nats_url"], "--creds", admin, "status").stderr
    finally:
        pool.stop_all()
