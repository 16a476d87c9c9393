"""End to end: `claw` as real processes - up, submit, inspect, crash and restart."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from common.config import NatsSettings
from common.identity import default_identity
from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from tests.helpers import BUILTIN_SKILLS, ProcessPool, child_env, spec, wait_until

pytestmark = pytest.mark.e2e


def nodes(pool: ProcessPool) -> list[dict[str, object]]:
    result = pool.run("nodes", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def start_cluster(pool: ProcessPool, workers: int, concurrency: int = 4) -> None:
    pool.spawn("coordinator", "coordinator", "start")
    for i in range(1, workers + 1):
        pool.spawn("worker", "worker", "start", "--node-id", f"w{i}", "--concurrency", str(concurrency))

    def all_online() -> bool:
        result = pool.run("nodes", "--json")  # fails until the coordinator answers
        return result.returncode == 0 and sum(n["status"] == "online" for n in json.loads(result.stdout)) == workers

    wait_until(all_online, timeout_s=30, interval_s=0.3, what=f"{workers} workers online")


def test_claw_up_runs_the_empty_task_loop_and_stops_cleanly(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(CLAW_LOG_LEVEL="info"), tmp_path)
    try:
        up = pool.spawn("up", "up", "--workers", "2", "--data-dir", str(tmp_path / "data"), "--nats-port", "0",
                        "--monitor-port", "0", "--gateway", "127.0.0.1:0")  # fmt: skip
        match = wait_until(
            lambda: re.search(r"claw --nats (nats://\S+) submit", up.output()), timeout_s=60, what="claw up banner"
        )
        url = match.group(1)
        creds = str(tmp_path / "data" / "auth" / "admin.creds")  # the local admin's, which claw up wrote
        admin = ("--nats", url, "--creds", creds)
        children = psutil.Process(up.popen.pid).children(recursive=True)
        assert len(children) >= 4  # nats-server, coordinator, 2 workers

        result = pool.run(*admin, "submit", "echo", "--wait")
        assert result.returncode == 0, result.stderr
        assert re.match(r"^[0-9A-Z]{26} succeeded in .*: \{\}$", result.stdout.strip())
        listed = pool.run(*admin, "task", "list", "--json")
        assert [t["state"] for t in json.loads(listed.stdout)] == ["succeeded"]

        # A large input from a CLI with no artifacts settings lands in the cluster's store under the
        # data dir (the CLI asks the coordinator where it is) and the result comes back as an artifact.
        big = tmp_path / "big.json"
        big.write_text(json.dumps({"blob": "y" * 400_000}))
        result = pool.run(
            "--nats", url, "--creds", creds, "submit", "echo", "--input-file", str(big), "--wait", "--json"
        )
        assert result.returncode == 0, result.stderr
        [task] = json.loads(result.stdout)
        assert task["state"] == "succeeded" and "$artifact" in task["result"]
        task_id = task["task_id"]
        out = tmp_path / "result.json"
        got = pool.run(
            "--nats", url, "--creds", creds, "artifacts", "get", task_id, "result.json", "--output", str(out)
        )
        assert got.returncode == 0, got.stderr
        assert json.loads(out.read_text()) == {"blob": "y" * 400_000}
        assert any((tmp_path / "data" / "artifacts").rglob("*"))

        up.popen.send_signal(signal.SIGTERM)
        assert up.popen.wait(60) == 0
        assert "cluster stopped" in up.output()
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert (tmp_path / "data" / "claw.db").exists()
        assert (tmp_path / "data" / "logs" / "worker-1.log").read_text().count("worker.stopped") == 1
    finally:
        pool.stop_all()


def test_300_tasks_from_jsonl_all_succeed_and_both_workers_take_part(processes: ProcessPool, tmp_path: Path) -> None:
    start_cluster(processes, workers=2, concurrency=4)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"seconds": 0.01, "n": i}) + "\n" for i in range(300)))

    started = time.monotonic()
    result = processes.run("submit", "sleep", "--input-file", str(tasks), "--wait", "--json", timeout_s=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    finished = json.loads(result.stdout)
    assert len(finished) == 300 and {t["state"] for t in finished} == {"succeeded"}
    assert all(t["result"]["slept_s"] >= 0.01 for t in finished)  # each entry carries its result
    print(f"\n300-task JSONL submit --wait through the CLI: {elapsed:.2f} s")

    listed = json.loads(processes.run("task", "list", "--limit", "1000", "--json").stdout)
    assert len(listed) == 300
    assert {t["node_id"] for t in listed} == {"w1", "w2"}
    assert all(t["attempts"] == 1 for t in listed)


async def test_coordinator_killed_mid_run_and_restarted_loses_nothing(
    processes: ProcessPool, nats_server: EmbeddedNatsServer, prefix: str
) -> None:
    start_cluster(processes, workers=2, concurrency=4)
    coordinator = next(p for p in processes.processes if p.name == "coordinator")
    client = await ClawClient.connect(NatsSettings(url=nats_server.client_url, prefix=prefix))
    try:
        results = await client.submit_many([spec("sleep", {"seconds": 0.05, "n": i}) for i in range(120)])
        ids = [r.task_id for r in results]

        async def some_done() -> bool:
            states = await client.task_states(ids)
            return sum(s == TaskState.SUCCEEDED for s in states.values()) >= 10

        from tests.helpers import eventually

        await eventually(some_done, timeout_s=30, what="first tasks done")
        coordinator.signal(signal.SIGKILL)
        coordinator.popen.wait(10)
        # Workers keep finishing tasks while the coordinator is down; their events wait in JetStream.
        processes.spawn("coordinator", "coordinator", "start")
        # Events the killed coordinator held come back after events_ack_wait_s (10 s).
        final = await client.wait(ids, timeout_s=60)
        assert set(final.values()) == {TaskState.SUCCEEDED}
        assert len(final) == 120
        tasks = [await client.get_task(task_id) for task_id in ids]
    finally:
        await client.close()
    for task in tasks:
        outcomes = [e for e in task.events if e.kind == "succeeded"]
        assert len(outcomes) == 1, f"{task.task_id} recorded {len(outcomes)} outcomes"
        assert len(task.attempt_log) == 1


def test_killed_worker_shows_offline_within_the_heartbeat_timeout(processes: ProcessPool) -> None:
    start_cluster(processes, workers=1)
    worker = next(p for p in processes.processes if p.name == "worker")
    worker.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: nodes(processes)[0]["status"] == "offline", timeout_s=20, interval_s=0.1, what="node offline")
    detected_after = time.monotonic() - killed_at
    timeout_s = 0.5 * 3  # heartbeat interval (from the fixture) x missed beats (default)
    print(f"\nworker SIGKILL -> offline after {detected_after:.2f} s (heartbeat timeout {timeout_s} s)")
    # The timeout itself plus slack for the sweep interval, a CLI start-up and a loaded machine.
    assert detected_after < timeout_s + 5.0
    assert nodes(processes)[0]["running"] == 0


def test_bad_input_gives_one_clear_error_line(processes: ProcessPool, tmp_path: Path) -> None:
    start_cluster(processes, workers=1)
    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_text('{"ok": 1}\nnot json\n')
    cases = [
        (("submit", "echo", "--input", "{oops"), "--input is not valid JSON"),
        (("submit", "echo", "--input", "[1]"), "must be a JSON object"),
        (("submit", "echo", "--input-file", str(bad_file)), "bad.jsonl line 2 is not valid JSON"),
        (
            ("submit", "nope"),
            "unknown skill 'nope'; skills offered by online workers: " + BUILTIN_SKILLS,
        ),
        (("submit", "Bad Skill"), "not a valid skill name"),
        (("task", "show", "01NOSUCHTASK00000000000000"), "no task with id"),
        (("--nats", "nats://127.0.0.1:1", "status"), "cannot reach NATS at nats://127.0.0.1:1.*claw up"),
    ]
    for args, message in cases:
        result = processes.run(*args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert re.search(message, lines[0]), (message, lines[0])
    # Nothing was written by any of them.
    assert json.loads(processes.run("task", "list", "--json").stdout) == []


def test_no_coordinator_is_one_clear_line(processes: ProcessPool) -> None:
    result = processes.run("status")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: no coordinator is answering on {processes.env['CLAW_NATS_PREFIX']}.api.{default_identity()}.status; "
        "start one with `claw coordinator start` (or a whole local cluster with `claw up`)"
    )


def test_submit_wait_exits_1_when_the_task_fails(processes: ProcessPool) -> None:
    start_cluster(processes, workers=1)
    result = processes.run("submit", "fail", "--input", '{"message": "broken on purpose"}', "--wait")
    assert result.returncode == 1
    assert "dead: PermanentError: broken on purpose" in result.stdout


def test_nats_start_serves_until_sigterm(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    try:
        server = pool.spawn(
            "nats", "nats", "start", "--port", "0", "--http-port", "0", "--store-dir", str(tmp_path / "s")
        )
        match = wait_until(lambda: re.search(r"ready: (nats://\S+)", server.output()), timeout_s=30, what="ready line")
        status = pool.run("--nats", match.group(1), "--creds", str(tmp_path / "auth" / "admin.creds"), "status")
        assert "no coordinator is answering" in status.stderr  # NATS answered; nobody serves the API yet
        server.popen.send_signal(signal.SIGTERM)
        assert server.popen.wait(30) == 0
    finally:
        pool.stop_all()


def test_dead_letters_replay_purge_and_cancel_through_the_cli(processes: ProcessPool) -> None:
    start_cluster(processes, workers=1)
    failed = processes.run("submit", "fail", "--input", '{"message": "x"}', "--max-attempts", "1", "--wait", "--json")
    assert failed.returncode == 1
    [failed_task] = json.loads(failed.stdout)
    task_id = failed_task["task_id"]
    assert failed_task["state"] == "dead" and failed_task["error_type"] == "PermanentError"

    def letters() -> list[dict[str, object]]:
        return json.loads(processes.run("dlq", "list", "--json").stdout)  # type: ignore[no-any-return]

    [letter] = wait_until(letters, timeout_s=20, what="dead letter")
    assert letter["letter"]["task_id"] == task_id  # type: ignore[index]
    table = processes.run("dlq", "list").stdout
    assert task_id in table and "fail" in table and "PermanentError: x" in table

    replay = processes.run("dlq", "replay", task_id)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.startswith(f"{task_id} replayed: it runs again as a new series of attempts (now ")
    shown = processes.run("task", "show", task_id).stdout
    assert "replayed" in shown

    assert processes.run("dlq", "purge", "--older-than", "1d").stdout.strip() == "purged 0 dead letter(s)"
    bad = processes.run("dlq", "purge", "--older-than", "5x")
    assert bad.returncode == 1 and "'5x' is not a duration" in bad.stderr

    # Dead again: one letter still, now of the second series (with both attempts).
    def series_and_attempts() -> list[tuple[object, int]]:
        return [(v["letter"]["series"], len(v["letter"]["attempts"])) for v in letters()]  # type: ignore[index]

    wait_until(lambda: series_and_attempts() == [(2, 2)], timeout_s=20, what="the replay dead again")
    assert processes.run("dlq", "purge").stdout.strip() == "purged 1 dead letter(s)"

    long = json.loads(processes.run("submit", "sleep", "--input", '{"seconds": 60}', "--json").stdout)[0]
    cancelled = processes.run("task", "cancel", long["task_id"], "--reason", "not needed")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == (
        f"{long['task_id']} cancelled: it will not run again (a running attempt is stopped on its worker)"
    )
    again = processes.run("task", "cancel", long["task_id"])
    assert again.returncode == 1 and "already cancelled; there is nothing to cancel" in again.stderr
    unknown = processes.run("task", "cancel", "01NOSUCHTASK00000000000000")
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: no task with id")


def test_skills_guard_approvals_and_audit_through_the_cli(processes: ProcessPool, tmp_path: Path) -> None:
    import sqlite3

    examples = Path(__file__).resolve().parents[2] / "examples" / "skills"
    start_cluster(processes, workers=1)
    installed = processes.run("skills", "install", str(examples / "webhook_post"))
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.splitlines()[0] == "webhook.post@1.0.0 installed and enabled"
    listing = processes.run("skills", "list").stdout
    assert "webhook.post" in listing and "write_external" in listing and "installed" in listing
    assert "read_only" in processes.run("skills", "show", "echo").stdout
    bad = processes.run("skills", "validate", str(tmp_path))
    assert bad.returncode == 1 and "no such file" in bad.stderr

    check = processes.run("guard", "check", "webhook.post", "--input", '{"url": "http://x", "payload": {}}')
    assert "rule 'external-or-funds' -> require_approval (1 approval)" in check.stdout

    submitted = processes.run(
        "submit", "webhook.post", "--input", '{"url": "http://127.0.0.1:9/", "payload": {"a": 1}}', "--json"
    )
    [held] = json.loads(submitted.stdout)
    assert held["state"] == "waiting_approval" and "needs 1 approval" in held["note"]
    waiting = processes.run("approvals").stdout
    assert held["task_id"] in waiting and "webhook.post" in waiting and "0/1" in waiting
    rejected = processes.run("reject", held["task_id"], "--reason", "wrong hook")
    assert rejected.returncode == 0 and rejected.stdout.strip() == f"{held['task_id']} rejected"
    assert processes.run("approvals").stdout.strip() == "nothing waits for approval"
    late = processes.run("approve", held["task_id"])
    assert late.returncode == 1 and "is rejected, not waiting for approval" in late.stderr

    verified = processes.run("audit", "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("event log intact:")
    db_path = Path(processes.env["CLAW_COORDINATOR_DB_PATH"])
    offline = processes.run("audit", "verify", "--db", str(db_path))
    assert offline.returncode == 0 and "event log intact" in offline.stdout
    db = sqlite3.connect(db_path)
    try:
        db.execute("DROP TRIGGER events_no_update")
        event_id = db.execute("SELECT id FROM events WHERE kind = 'rejected'").fetchone()[0]
        db.execute('UPDATE events SET data = \'{"by": "nobody"}\' WHERE id = ?', (event_id,))
        db.commit()
    finally:
        db.close()
    tampered = processes.run("audit", "verify", "--db", str(db_path))
    assert tampered.returncode == 1
    assert tampered.stdout.startswith(f"event log TAMPERED: event {event_id}: its content does not match its hash")


def test_a_3_mib_input_file_travels_as_artifacts_and_is_stored_once(processes: ProcessPool, tmp_path: Path) -> None:
    start_cluster(processes, workers=1)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"rows": ["y" * 100] * 30_000}))
    assert big.stat().st_size > 3_000_000
    store = Path(processes.env["CLAW_ARTIFACTS_LOCAL_DIR"])

    result = processes.run("submit", "echo", "--input-file", str(big), "--wait", "--json", timeout_s=120)
    assert result.returncode == 0, result.stderr
    [task] = json.loads(result.stdout)
    listed = processes.run("artifacts", "list", task["task_id"], "--json")
    assert sorted(a["name"] for a in json.loads(listed.stdout)) == ["input.json", "result.json"]
    shown = processes.run("task", "show", task["task_id"]).stdout
    assert "input            artifact input.json (3." in shown
    assert f"claw artifacts get {task['task_id']} result.json -o result.json" in shown

    out = tmp_path / "input-copy.json"
    got = processes.run("artifacts", "get", task["task_id"], "input.json", "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == big.read_bytes()
    objects = sorted(p for p in store.rglob("*") if p.is_file() and "sha256" in p.parts)
    again = processes.run("submit", "echo", "--input-file", str(big), "--wait", timeout_s=120)
    assert again.returncode == 0, again.stderr
    # The human line says where the result is instead of printing 3 MiB of JSON.
    assert re.search(r"succeeded in .*: artifact result\.json \(.* MiB, sha256 [0-9a-f]{16}\); claw artifacts get ",
                     again.stdout), again.stdout  # fmt: skip
    assert sorted(p for p in store.rglob("*") if p.is_file() and "sha256" in p.parts) == objects


def test_task_watch_streams_progress_in_order_until_the_end(processes: ProcessPool) -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT

    start_cluster(processes, workers=1)
    [submitted] = json.loads(processes.run("submit", "sleep", "--input", '{"seconds": 3}', "--json").stdout)
    watcher = subprocess.run(
        [sys.executable, "-m", "cli", "task", "watch", submitted["task_id"]],
        cwd=ROOT, env=processes.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert watcher.returncode == 0, watcher.stderr
    lines = watcher.stdout.splitlines()
    progress = [line for line in lines if "progress" in line]
    # One format for every progress line, recorded or live, with the percentage rounded.
    formats = [re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}  #1 progress (\d+)% sleeping", line) for line in progress]
    assert all(formats), progress
    percents = [int(match.group(1)) for match in formats if match]
    assert len(percents) >= 2 and percents == sorted(percents) and percents[-1] == 100
    assert any("succeeded" in line for line in lines)
    assert lines[-1].startswith("reproduce: claw submit sleep")
    shown = processes.run("task", "show", submitted["task_id"]).stdout
    timeline = [line for line in shown.splitlines() if "progress" in line]
    assert len(timeline) == 3 and "succeeded on attempt 1 of 3" in shown
    assert [line.split()[-2] for line in timeline] == ["33%", "67%", "100%"]  # rounded
