"""Backups that restore: back up a running cluster, lose everything (database, artifacts, the NATS
store), restore onto an empty data dir with a fresh nats-server, and find the same tasks, a chain
that verifies, the artifacts, and the queued tasks running.

Real processes throughout (`claw` subprocesses, file-backed nats-servers, SQLite files).
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest

from cli.processes import child_env
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from tests.helpers import ProcessPool, local_dirs, wait_until

pytestmark = pytest.mark.e2e


def _env(server: EmbeddedNatsServer, prefix: str, data: Path) -> dict[str, str]:
    return child_env(
        CLAW_NATS_URL=server.client_url,
        CLAW_NATS_PREFIX=prefix,
        CLAW_COORDINATOR_DB_PATH=str(data / "claw.db"),
        CLAW_WORKER_HEARTBEAT_INTERVAL_S="0.5",
        CLAW_WORKER_IDLE_POLL_INTERVAL_S="0.5",
        CLAW_LOG_FORMAT="json",
        **local_dirs(data),
    )


def _tasks(db: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT task_id, state FROM tasks").fetchall())


def _submit(pool: ProcessPool, *args: str) -> str:
    result = pool.run("submit", *args, "--json")
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)[0]["task_id"])


def _online(pool: ProcessPool, node_id: str) -> bool:
    result = pool.run("nodes", "--json")
    return result.returncode == 0 and any(
        n["node_id"] == node_id and n["status"] == "online" for n in json.loads(result.stdout)
    )


def test_a_backup_restored_onto_an_empty_data_dir_and_a_new_nats_has_everything_and_runs_what_waited(
    tmp_path: Path, prefix: str
) -> None:
    data, backup = tmp_path / "data", tmp_path / "backup"
    server = EmbeddedNatsServer(NatsServerOptions(store_dir=tmp_path / "nats-a", port=0, http_port=0)).start()
    pool = ProcessPool(_env(server, prefix, data), tmp_path / "logs-a")
    try:
        coordinator = pool.spawn("coordinator", "coordinator", "start")
        pool.spawn("worker", "worker", "start", "--node-id", "w1")
        wait_until(lambda: _online(pool, "w1"), timeout_s=40, interval_s=0.3, what="w1 online")
        done = [_submit(pool, "echo", "--input", json.dumps({"n": i}), "--wait") for i in range(5)]
        # An input too big to travel inline: it lives in the artifact store.
        big_input = tmp_path / "big.json"
        big_input.write_text(json.dumps({"pad": "x" * 400_000}))
        big = _submit(pool, "echo", "--input-file", str(big_input), "--wait")
        assert pool.run("node", "pause", "w1").returncode == 0
        waiting = [_submit(pool, "echo", "--input", json.dumps({"later": i})) for i in range(4)]
        wait_until(lambda: all(_tasks(data / "claw.db").get(t) == "queued" for t in waiting), what="queued")

        created = pool.run("backup", "create", str(backup), "--json")  # online: the coordinator runs
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["tasks"] == len(done) + 1 + len(waiting)
        before = _tasks(backup / "claw.db")
        coordinator.signal(signal.SIGTERM)
    finally:
        pool.stop_all()
        server.kill()

    # Everything is lost: the database, the artifacts, the NATS store.
    shutil.rmtree(data)
    shutil.rmtree(tmp_path / "nats-a")

    server = EmbeddedNatsServer(NatsServerOptions(store_dir=tmp_path / "nats-b", port=0, http_port=0)).start()
    pool = ProcessPool(_env(server, prefix, data), tmp_path / "logs-b")
    try:
        restored = pool.run("backup", "restore", str(backup), "--json")
        assert restored.returncode == 0, restored.stderr
        again = pool.run("backup", "restore", str(backup))
        assert again.returncode != 0 and "exists" in again.stderr  # never over a live data dir by accident

        coordinator = pool.spawn("coordinator", "coordinator", "start")
        pool.spawn("worker", "worker", "start", "--node-id", "w2")
        wait_until(lambda: _online(pool, "w2"), timeout_s=40, interval_s=0.3, what="w2 online")

        wait_until(
            lambda: all(_tasks(data / "claw.db").get(t) == "succeeded" for t in waiting),
            timeout_s=60,
            interval_s=0.3,
            what="the tasks that were queued at the backup ran after the restore",
        )
        after = _tasks(data / "claw.db")
        assert {t: after[t] for t in [*done, big]} == {t: before[t] for t in [*done, big]}
        assert set(after) == set(before)
        verify = pool.run("audit", "verify", "--json")
        assert verify.returncode == 0 and json.loads(verify.stdout)["ok"], verify.stdout + verify.stderr
        shown = pool.run("task", "show", big, "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "succeeded"
        assert any((data / "artifacts").rglob("*")), "the artifacts were not restored"
        assert "restore.reconciled" in coordinator.output()
    finally:
        pool.stop_all()
        server.kill()
