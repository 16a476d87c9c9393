"""`claw submit --wait` is never silent: the id at once, a held task named with its rule, a progress
bar for a batch on a terminal, and Ctrl-C saying the tasks keep running (exit 130)."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from tests.helpers import ClawProcess, ProcessPool, PtyProcess, wait_until

pytestmark = pytest.mark.e2e

ID = r"[0-9A-Z]{26}"


def start_cluster(pool: ProcessPool, concurrency: int = 4) -> None:
    pool.spawn("coordinator", "coordinator", "start")
    pool.spawn("worker", "worker", "start", "--node-id", "w1", "--concurrency", str(concurrency))

    def online() -> bool:
        result = pool.run("nodes", "--json")
        return result.returncode == 0 and any(n["status"] == "online" for n in json.loads(result.stdout))

    wait_until(online, timeout_s=30, interval_s=0.3, what="a worker online")


def task_state(pool: ProcessPool, task_id: str) -> str:
    shown = pool.run("task", "show", task_id, "--json")
    assert shown.returncode == 0, shown.stderr
    return str(json.loads(shown.stdout)["state"])


def waiting_line(process: ClawProcess, pattern: str) -> re.Match[str]:
    return wait_until(lambda: re.search(pattern, process.output()), timeout_s=30, what=pattern)


def test_the_json_answer_has_one_shape_with_and_without_wait(processes: ProcessPool) -> None:
    start_cluster(processes)
    submitted = processes.run("submit", "echo", "--input", '{"a": 1}', "--json")
    waited = processes.run("submit", "echo", "--input", '{"a": 1}', "--wait", "--json")
    assert submitted.returncode == 0 and waited.returncode == 0, (submitted.stderr, waited.stderr)
    [before], [after] = json.loads(submitted.stdout), json.loads(waited.stdout)
    assert list(before) == list(after)  # the same keys, in the same order
    assert before["state"] in ("pending", "queued") and before["result"] is None
    assert after["state"] == "succeeded" and after["result"] == {"a": 1} and after["trace_id"]
    # With --json, what stderr says is JSON too: here the notice naming the task waited for.
    assert [json.loads(line) for line in waited.stderr.splitlines()] == [
        {"notice": f"{after['task_id']} submitted; waiting for it to finish", "task_id": after["task_id"]}
    ]
    human = processes.run("submit", "echo", "--wait")
    assert human.returncode == 0, human.stderr
    task_id = re.fullmatch(rf"({ID}) submitted; waiting for it to finish\n", human.stderr).group(1)  # type: ignore[union-attr]
    assert human.stdout.startswith(f"{task_id} succeeded in ")


def test_a_held_task_says_it_waits_for_approval_and_by_which_rule(processes: ProcessPool) -> None:
    start_cluster(processes)
    waiter = processes.spawn("submit", "submit", "http.request", "--input", '{"url": "http://127.0.0.1:9/"}', "--wait")
    match = waiting_line(waiter, rf"({ID}) waiting for approval \((.*)\)\n")
    task_id = match.group(1)
    assert match.group(2) == f"rule 'external-or-funds'; `claw approvals`, `claw approve {task_id}`"
    assert re.match(rf"{task_id} submitted; waiting for it to finish\n", waiter.output())  # the id came first
    rejected = processes.run("reject", task_id, "--reason", "not today")
    assert rejected.returncode == 0, rejected.stderr
    assert waiter.popen.wait(30) == 1  # it ended, and not well
    assert f"{task_id} rejected: " in waiter.output()


def test_ctrl_c_while_waiting_leaves_the_tasks_running_and_says_how_to_follow_them(
    processes: ProcessPool, tmp_path: Path
) -> None:
    start_cluster(processes)
    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"seconds": 60}\n' * 3)
    modes = {
        "one task": ["sleep", "--input", '{"seconds": 60}'],
        "a batch": ["sleep", "--input-file", str(batch)],
        "one task --json": ["sleep", "--input", '{"seconds": 60}', "--json"],
        "held": ["http.request", "--input", '{"url": "http://127.0.0.1:9/"}'],
    }
    for mode, args in modes.items():
        waiter = processes.spawn("submit", "submit", *args, "--wait")
        ids = re.findall(ID, waiting_line(waiter, r"submitted.*waiting for (it|them) to finish").string)
        if mode == "held":
            waiting_line(waiter, "waiting for approval")
        else:
            wait_until(lambda id=ids[0]: task_state(processes, id) == "running", timeout_s=30, what=mode)

        waiter.signal(signal.SIGINT)
        assert waiter.popen.wait(30) == 130, mode
        said = waiter.output()
        assert "Traceback" not in said, said
        if mode == "one task":
            assert f"stopped waiting; task {ids[0]} keeps running: follow it with `claw task watch {ids[0]}`" in said
        elif mode == "held":
            assert f"task {ids[0]} keeps waiting for approval (`claw approve {ids[0]}`)" in said
        elif mode == "a batch":
            assert "stopped waiting with 0 of 3 tasks finished; the others keep running" in said
            assert "claw task list" in said
        else:
            errors = [json.loads(line) for line in said.splitlines() if line.startswith('{"error"')]
            assert errors[0]["code"] == "interrupted" and f"claw task watch {ids[0]}" in errors[0]["error"]
            listed = json.loads(said[said.index("[") : said.index("]", said.index("[")) + 1])
            assert [t["task_id"] for t in listed] == [ids[0]] and listed[0]["state"] in ("pending", "queued")
        expected = "waiting_approval" if mode == "held" else "running"
        assert task_state(processes, ids[0]) == expected, mode  # the Ctrl-C did not cancel it
        for task in json.loads(processes.run("task", "list", "--json").stdout):
            if task["state"] in ("running", "queued", "waiting_approval"):
                processes.run("task", "cancel", task["task_id"])


def test_a_batch_shows_a_progress_bar_on_a_terminal_and_none_when_piped(processes: ProcessPool, tmp_path: Path) -> None:
    start_cluster(processes, concurrency=8)
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(f'{{"i": {i}}}\n' for i in range(20)))
    terminal = PtyProcess.spawn("submit", "echo", "--input-file", str(batch), "--wait", env=processes.env)
    try:
        assert terminal.wait(60) == 0
    finally:
        terminal.stop()
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.output())
    assert re.search(r"20/20 done, 0 failed +(\d+\.\d|-) tasks/s ETA", drawn), drawn
    assert re.search(r"\d+ tasks submitted .*; waiting for them to finish", drawn)
    assert "20 tasks finished in " in drawn

    failing = tmp_path / "failing.jsonl"
    failing.write_text("".join(f'{{"message": "no {i}"}}\n' for i in range(3)))
    on_tty = PtyProcess.spawn("submit", "fail", "--input-file", str(failing), "--wait", env=processes.env)
    try:
        assert on_tty.wait(60) == 1
    finally:
        on_tty.stop()
    assert "3/3 done, 3 failed" in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", on_tty.output())

    piped = processes.run("submit", "echo", "--input-file", str(batch), "--wait")
    assert piped.returncode == 0, piped.stderr
    assert "tasks/s" not in piped.stderr and "\x1b[" not in piped.stderr + piped.stdout
    assert re.fullmatch(r"20 tasks finished in .*: 20 succeeded\n", piped.stdout)

    as_json = PtyProcess.spawn("submit", "echo", "--input-file", str(batch), "--wait", "--json", env=processes.env)
    try:
        assert as_json.wait(60) == 0
    finally:
        as_json.stop()
    assert "tasks/s" not in as_json.output()
