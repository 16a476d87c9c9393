"""Fault injection with real `claw` processes: SIGKILL, SIGSTOP, NATS and coordinator crashes, chaos."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.msg import Msg

from common.config import NatsSettings
from common.models import DeliveryClaims, TaskView
from common.states import AttemptState, TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from tests.helpers import ClawProcess, ProcessPool, child_env, eventually, local_dirs, spec, wait_until

pytestmark = pytest.mark.e2e

DEFAULTS = {"CLAW_WORKER_HEARTBEAT_INTERVAL_S": "1.0"}  # the shipped default (the fixture speeds it up)


def start_workers(pool: ProcessPool, count: int, *, concurrency: int = 2, env: dict[str, str] | None = None) -> None:
    for i in range(1, count + 1):
        pool.spawn("worker", "worker", "start", "--node-id", f"w{i}", "--concurrency", str(concurrency), env=env)


def wait_online(pool: ProcessPool, count: int) -> None:
    def online() -> bool:
        result = pool.run("nodes", "--json")
        return result.returncode == 0 and sum(n["status"] == "online" for n in json.loads(result.stdout)) >= count

    wait_until(online, timeout_s=40, interval_s=0.3, what=f"{count} nodes online")


def worker_named(pool: ProcessPool, node_id: str) -> ClawProcess:
    return next(p for p in pool.processes if p.name == "worker" and f"--node-id', '{node_id}'" in str(p.popen.args))


async def client_for(url: str, prefix: str) -> ClawClient:
    return await ClawClient.connect(NatsSettings(url=url, prefix=prefix))


async def running_on(client: ClawClient, task_id: str, attempt: int = 1) -> TaskView:
    async def check() -> TaskView | None:
        task = await client.get_task(task_id)
        return task if task.state == TaskState.RUNNING and task.attempts == attempt else None

    return await eventually(check, timeout_s=30, interval_s=0.02, what=f"attempt {attempt} running")


async def test_killed_workers_task_runs_again_elsewhere_within_5_s(processes: ProcessPool, prefix: str) -> None:
    processes.spawn("coordinator", "coordinator", "start")
    start_workers(processes, 2, env=DEFAULTS)
    wait_online(processes, 2)
    client = await client_for(processes.env["CLAW_NATS_URL"], prefix)
    try:
        submitted = await client.submit(spec("sleep", {"seconds": 3}))
        first = await running_on(client, submitted.task_id)
        worker_named(processes, first.node_id or "").signal(signal.SIGKILL)
        killed_at = time.time()
        second = await running_on(client, submitted.task_id, attempt=2)
        delay = (second.attempt_log[-1].started_at or 0) - killed_at
        print(f"\nSIGKILLed worker's task running again on {second.node_id} after {delay:.2f} s")
        assert second.node_id != first.node_id
        assert delay < 5.0
        assert await client.wait([submitted.task_id], timeout_s=30) == {submitted.task_id: TaskState.SUCCEEDED}
        task = await client.get_task(submitted.task_id)
    finally:
        await client.close()
    assert [(a.attempt, a.node_id, a.state) for a in task.attempt_log] == [
        (1, first.node_id, AttemptState.LOST),
        (2, second.node_id, AttemptState.SUCCEEDED),
    ]


async def test_a_worker_killed_before_it_reported_started_loses_its_task_within_5_s(
    processes: ProcessPool, prefix: str
) -> None:
    # w1 never reports `started` (as every worker does for an attempt's first 50 ms): the coordinator
    # knows its delivery only from w1's claims. A task of under 2 s sends no progress either.
    silent = DEFAULTS | {"CLAW_WORKER_STARTED_EVENT_DELAY_S": "600"}
    processes.spawn("coordinator", "coordinator", "start")
    processes.spawn("worker", "worker", "start", "--node-id", "w2", "--concurrency", "1", env=DEFAULTS)
    wait_online(processes, 1)
    client = await client_for(processes.env["CLAW_NATS_URL"], prefix)
    try:
        blocker = await client.submit(spec("sleep", {"seconds": 60}))  # keeps w2's only slot busy
        await running_on(client, blocker.task_id)
        processes.spawn("worker", "worker", "start", "--node-id", "w1", env=silent)
        wait_online(processes, 2)
        claimed: list[str] = []

        async def on_claims(msg: Msg) -> None:
            claimed.extend(c.task_id for c in msgspec.json.decode(msg.data, type=DeliveryClaims).claims)

        sub = await client.conn.nc.subscribe(client.conn.subjects.claims("w1"), cb=on_claims)
        submitted = await client.submit(spec("sleep", {"seconds": 1.9}))
        await eventually(lambda: submitted.task_id in claimed, timeout_s=30, interval_s=0.01, what="w1's claim")
        await sub.unsubscribe()
        worker_named(processes, "w1").signal(signal.SIGKILL)
        killed_at = time.time()
        assert (await client.get_task(submitted.task_id)).state == TaskState.QUEUED  # w1 never said `started`
        await client.cancel(blocker.task_id, reason="make room on w2")
        second = await running_on(client, submitted.task_id, attempt=2)
        delay = (second.attempt_log[-1].started_at or 0) - killed_at
        print(f"\ntask whose worker never reported started: running again on {second.node_id} after {delay:.2f} s")
        assert delay < 5.0
        assert await client.wait([submitted.task_id], timeout_s=30) == {submitted.task_id: TaskState.SUCCEEDED}
        task = await client.get_task(submitted.task_id)
    finally:
        await client.close()
    assert [(a.attempt, a.node_id, a.state) for a in task.attempt_log] == [
        (1, "w1", AttemptState.LOST),
        (2, "w2", AttemptState.SUCCEEDED),
    ]


async def test_a_frozen_workers_late_result_is_fenced_off(processes: ProcessPool, prefix: str) -> None:
    processes.spawn("coordinator", "coordinator", "start")
    start_workers(processes, 2)
    wait_online(processes, 2)
    client = await client_for(processes.env["CLAW_NATS_URL"], prefix)
    try:
        submitted = await client.submit(spec("sleep", {"seconds": 2}))
        first = await running_on(client, submitted.task_id)
        frozen = worker_named(processes, first.node_id or "")
        frozen.signal(signal.SIGSTOP)
        await running_on(client, submitted.task_id, attempt=2)  # reclaimed while the worker is frozen
        frozen.signal(signal.SIGCONT)
        assert await client.wait([submitted.task_id], timeout_s=30) == {submitted.task_id: TaskState.SUCCEEDED}

        async def zombie_reported() -> TaskView | None:
            task = await client.get_task(submitted.task_id)
            return task if any(e.kind == "succeeded (ignored)" for e in task.events) else None

        task = await eventually(zombie_reported, timeout_s=30, what="the frozen worker's late result")
    finally:
        await client.close()
    ignored = next(e for e in task.events if e.kind == "succeeded (ignored)")
    assert (ignored.attempt, ignored.node_id) == (1, first.node_id)
    assert [e.kind for e in task.events if e.to_state == TaskState.SUCCEEDED] == ["succeeded"]
    assert [(a.attempt, a.state) for a in task.attempt_log] == [(1, AttemptState.LOST), (2, AttemptState.SUCCEEDED)]
    assert task.node_id != first.node_id


async def submit_through_faults(client: ClawClient, count: int, ids: list[str], pause_s: float = 0.05) -> None:
    """Submit one task at a time, each retried until a coordinator accepts it."""
    for i in range(count):
        [result] = await client.submit_many([spec("sleep", {"seconds": 0.05, "n": i})], retry_for_s=120)
        ids.append(result.task_id)
        await asyncio.sleep(pause_s)  # pacing the producer, not synchronisation


async def test_coordinator_and_nats_crashes_lose_no_task(tmp_path: Path, prefix: str) -> None:
    server = EmbeddedNatsServer(NatsServerOptions(store_dir=tmp_path / "nats", port=0, http_port=0)).start()
    ports = (int(server.client_url.rsplit(":", 1)[1]), int(server.monitor_url.rsplit(":", 1)[1]))
    env = child_env(
        CLAW_NATS_URL=server.client_url,
        CLAW_NATS_PREFIX=prefix,
        CLAW_NATS_CONNECT_RETRY_S="60",
        CLAW_COORDINATOR_DB_PATH=str(tmp_path / "claw.db"),
        CLAW_WORKER_HEARTBEAT_INTERVAL_S="0.5",
        CLAW_WORKER_IDLE_POLL_INTERVAL_S="0.5",
        **local_dirs(tmp_path),
    )
    pool = ProcessPool(env, tmp_path)
    client = None
    try:
        coordinator = pool.spawn("coordinator", "coordinator", "start")
        start_workers(pool, 2)
        wait_online(pool, 2)
        client = await client_for(server.client_url, prefix)
        ids: list[str] = []
        producer = asyncio.create_task(submit_through_faults(client, 120, ids))

        await eventually(lambda: len(ids) >= 30, timeout_s=60, what="first submits")
        coordinator.signal(signal.SIGKILL)
        coordinator.popen.wait(10)
        await eventually(lambda: len(ids) >= 30, timeout_s=5)  # the producer keeps going, retrying
        pool.spawn("coordinator", "coordinator", "start")

        await eventually(lambda: len(ids) >= 70, timeout_s=60, what="submits after the coordinator restart")
        server.kill()
        server = EmbeddedNatsServer(
            NatsServerOptions(store_dir=tmp_path / "nats", port=ports[0], http_port=ports[1])
        ).start()

        await asyncio.wait_for(producer, 180)
        final = await client.wait(ids, timeout_s=120)
        counts: dict[str, int] = {}
        for state in final.values():
            counts[state] = counts.get(state, 0) + 1
        print(f"\n{len(ids)} tasks submitted across a coordinator SIGKILL and a nats-server SIGKILL: {counts}")
        assert len(set(ids)) == 120
        assert counts == {TaskState.SUCCEEDED: 120}
    finally:
        if client is not None:
            await client.close()
        pool.stop_all()
        server.kill()


def chaos_counts(db_path: Path) -> dict[str, Any]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall())
        attempts = db.execute("SELECT COUNT(*) FROM task_attempts").fetchone()[0]
        lost = db.execute("SELECT COUNT(*) FROM task_attempts WHERE state = 'lost'").fetchone()[0]
        doubles = db.execute(
            "SELECT COUNT(*) FROM (SELECT task_id FROM events WHERE to_state = 'succeeded' "
            "GROUP BY task_id HAVING COUNT(*) > 1)"
        ).fetchone()[0]
        ignored = db.execute("SELECT COUNT(*) FROM events WHERE kind LIKE '%(ignored)'").fetchone()[0]
    return {"states": states, "attempts": attempts, "lost": lost, "doubles": doubles, "ignored": ignored}


async def test_chaos_random_worker_kills_lose_nothing_and_record_nothing_twice(
    processes: ProcessPool, prefix: str, tmp_path: Path, chaos_tasks: int
) -> None:
    processes.spawn("coordinator", "coordinator", "start")
    start_workers(processes, 3, concurrency=4)
    wait_online(processes, 3)
    rng = random.Random(20261120)
    client = await client_for(processes.env["CLAW_NATS_URL"], prefix)
    kills = 0
    try:
        specs = [spec("sleep", {"seconds": round(rng.uniform(0.1, 0.4), 2), "n": i}) for i in range(chaos_tasks)]
        ids = [r.task_id for r in await client.submit_many(specs)]
        waiting = asyncio.create_task(client.wait(ids, timeout_s=600))
        while not waiting.done():
            await asyncio.wait([waiting], timeout=rng.uniform(0.8, 2.0))  # chaos pacing, not synchronisation
            if waiting.done():
                break
            victim = rng.choice([p for p in processes.processes if p.name == "worker" and p.alive])
            node = str(victim.popen.args).split("--node-id', '")[1].split("'")[0]
            victim.signal(signal.SIGKILL)
            victim.popen.wait(10)
            kills += 1
            processes.spawn("worker", "worker", "start", "--node-id", node, "--concurrency", "4")
        final = await waiting
    finally:
        await client.close()
    counts = chaos_counts(tmp_path / "claw.db")
    redeliveries = counts["attempts"] - chaos_tasks
    print(
        f"\nchaos: submitted {chaos_tasks}, succeeded {counts['states'].get('succeeded', 0)}, "
        f"attempts {counts['attempts']}, lost attempts {counts['lost']}, redeliveries {redeliveries}, "
        f"worker SIGKILLs {kills}, late reports ignored {counts['ignored']}, recorded twice {counts['doubles']}"
    )
    assert set(final.values()) == {TaskState.SUCCEEDED} and len(final) == chaos_tasks
    assert counts["states"] == {"succeeded": chaos_tasks}
    assert counts["doubles"] == 0
    assert kills >= 2


def test_concurrent_duplicate_submits_from_several_processes_make_one_task(processes: ProcessPool) -> None:
    processes.spawn("coordinator", "coordinator", "start")
    start_workers(processes, 1)
    wait_online(processes, 1)
    import subprocess
    import sys

    from tests.helpers import ROOT

    argv = [sys.executable, "-m", "cli", "submit", "echo", "--idempotency-key", "pay-42", "--json"]
    runs = [subprocess.Popen(argv, cwd=ROOT, env=processes.env, stdout=subprocess.PIPE) for _ in range(6)]
    outputs = [json.loads(run.communicate(timeout=60)[0]) for run in runs]
    ids = {out[0]["task_id"] for out in outputs}
    assert len(ids) == 1
    assert sorted(out[0]["duplicate"] for out in outputs) == [False] + [True] * 5
    assert len(json.loads(processes.run("task", "list", "--json").stdout)) == 1


def test_worker_supervisor_restarts_a_crashed_worker_process(processes: ProcessPool) -> None:
    import psutil

    processes.spawn("coordinator", "coordinator", "start")
    supervisor = processes.spawn("worker", "worker", "start", "--processes", "2", "--node-id", "box")
    wait_online(processes, 2)
    children = psutil.Process(supervisor.popen.pid).children()
    assert len(children) == 2
    victim = children[0]
    victim.kill()
    victim.wait(10)

    def replaced() -> bool:
        current = psutil.Process(supervisor.popen.pid).children()
        return len(current) == 2 and victim.pid not in {c.pid for c in current}

    wait_until(replaced, timeout_s=30, what="a new worker process")
    nodes = json.loads(processes.run("nodes", "--json").stdout)
    assert sorted(n["node_id"] for n in nodes) == ["box-p1", "box-p2"]
    wait_online(processes, 2)
    assert supervisor.stop(timeout_s=60) == 0
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
