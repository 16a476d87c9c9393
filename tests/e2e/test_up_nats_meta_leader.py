"""`claw up --nats-nodes 3` under a steady submit load: the JetStream meta leader (the server that
places every stream and consumer, found in each server's /jsz) is SIGKILLed. No task is lost, none is
recorded twice, another server becomes meta leader, `claw up` starts the killed one again, and the
longest submit stall is reported.

The stream-leader kill is tests/e2e/test_nats_cluster.py. Three servers, the coordinator, two workers
and 80 tasks: about 20 s on two loaded cores.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from common.config import NatsSettings
from common.errors import ClawError
from common.states import TaskState
from communication.api_client import ClawClient
from tests.e2e.test_up import claw_up
from tests.e2e.test_up_nats_cluster import nats_servers
from tests.helpers import eventually, spec

pytestmark = pytest.mark.e2e

TASKS = 80


def monitor_url(process: psutil.Process) -> str:
    """The monitoring URL of a nats-server `claw up` started (its `-m PORT`)."""
    argv = process.cmdline()
    return f"http://127.0.0.1:{argv[argv.index('-m') + 1]}"


def meta_leader(urls: list[str]) -> str | None:
    """The server leading the JetStream meta group, as the first server that answers says (None: none yet)."""
    for url in urls:
        try:
            with urllib.request.urlopen(f"{url}/jsz", timeout=2) as reply:
                leader = json.load(reply).get("meta_cluster", {}).get("leader")
        except OSError:
            continue
        if leader:
            return str(leader)
    return None


def recorded(db: Path) -> tuple[dict[str, str], dict[str, int], int]:
    """Each task's state, its attempts, and how many tasks recorded `succeeded` more than once."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        states = dict(conn.execute("SELECT task_id, state FROM tasks").fetchall())
        attempts = dict(conn.execute("SELECT task_id, COUNT(*) FROM task_attempts GROUP BY task_id").fetchall())
        doubles = conn.execute(
            "SELECT COUNT(*) FROM (SELECT task_id FROM events WHERE to_state = 'succeeded' "
            "GROUP BY task_id HAVING COUNT(*) > 1)"
        ).fetchone()[0]
    return states, attempts, int(doubles)


@pytest.mark.timeout(600)
async def test_claw_up_nats_cluster_loses_no_task_when_its_meta_leader_is_killed_under_load(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if not request.config.getoption("--chaos-full"):
        # Three nats-servers electing a new meta leader under load beside the rest of the suite on two
        # cores: the election alone took over 60 s once (a clean CI run, 2026-12-05). Measured with
        # --chaos-full (docs/Reliability.md); the stream-leader kill stays in the default suite.
        pytest.skip("the meta-leader kill runs with --chaos-full")
    extra = ("--nats-nodes", "3", "--gateway", "off")
    with claw_up(tmp_path, workers=2, json_out=True, extra=extra, ready_timeout_s=240) as up:
        servers = nats_servers(up.data_dir)
        urls = [monitor_url(p) for p in servers.values()]
        creds = str(up.data_dir / "auth" / "admin.creds")
        client = await ClawClient.connect(NatsSettings(url=up.url, creds_file=creds, connect_retry_s=30))
        producer: asyncio.Task[None] | None = None
        try:

            async def both_online() -> bool:
                try:
                    return sum(n.status == "online" for n in await client.nodes()) == 2
                except ClawError:
                    return False

            await eventually(both_online, timeout_s=120, interval_s=0.5, what="two workers on claw up's cluster")
            ids: list[str] = []
            stalls: list[float] = []

            async def produce() -> None:
                for i in range(TASKS):
                    started = time.monotonic()
                    [result] = await client.submit_many([spec("sleep", {"seconds": 0.1, "n": i})], retry_for_s=120)
                    stalls.append(time.monotonic() - started)
                    ids.append(result.task_id)
                    await asyncio.sleep(0.05)  # a steady load, not synchronisation

            producer = asyncio.create_task(produce())
            await eventually(lambda: len(ids) >= 20, timeout_s=60, what="submits before the kill")
            leader = await asyncio.to_thread(meta_leader, urls)
            assert leader in servers, f"meta leader {leader!r} is not one of claw up's servers {sorted(servers)}"
            killed_pid = servers[leader].pid
            servers[leader].kill()
            killed_at = len(ids)
            others = [monitor_url(p) for name, p in servers.items() if name != leader]

            async def elected() -> str | None:
                # The survivors name the dead server until they notice and elect another; claw up
                # starts the dead one again meanwhile, and it may win the election once it is back.
                now = await asyncio.to_thread(meta_leader, others)
                back = (p := nats_servers(up.data_dir).get(leader)) is not None and p.pid != killed_pid
                return now if now is not None and (now != leader or back) else None

            new_leader = await eventually(elected, timeout_s=60, interval_s=0.2, what="a new meta leader")
            await asyncio.wait_for(producer, 300)
            final = await client.wait(ids, timeout_s=180)
            assert len(set(ids)) == TASKS and killed_at < TASKS  # the kill fell inside the load
            assert set(final.values()) == {TaskState.SUCCEEDED}, final  # 0 lost
            [db] = list(up.data_dir.rglob("claw.db"))
            states, attempts, doubles = recorded(db)
            assert all(states.get(t) == "succeeded" for t in ids)
            assert doubles == 0  # 0 recorded twice
            reruns = sum(1 for t in ids if attempts.get(t, 0) > 1)
            await eventually(
                lambda: (p := nats_servers(up.data_dir).get(leader)) is not None and p.pid != killed_pid,
                timeout_s=60,
                what=f"claw up starting {leader} again",
            )
            print(
                f"\nmeta leader {leader} SIGKILLed under load (claw up --nats-nodes 3): meta leader afterwards "
                f"{new_leader}; {TASKS} tasks, 0 lost, 0 recorded twice, {reruns} run twice; "
                f"longest submit stall {max(stalls):.2f} s (p50 {sorted(stalls)[len(stalls) // 2]:.3f} s)"
            )
        finally:
            if producer is not None and not producer.done():
                producer.cancel()
            await client.close()
