"""A 3-node NATS cluster under load: the tasks stream's leader SIGKILLed, then two of three servers
lost. Nothing is lost; while the cluster has no quorum submits are refused at once, saying why, and
nothing refused is stored; service resumes when the servers return.

Real processes: three file-backed nats-servers routed on loopback (tests/nats_cluster.py), a
coordinator and two workers as `claw` subprocesses given the three URLs; `jetstream.replicas` left at
its default, which makes three copies on a cluster (tests/integration/test_default_replicas.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from cli.processes import child_env
from common.config import NatsSettings
from common.errors import ClawError
from common.ids import new_id
from common.states import TaskState
from communication.api_client import ClawClient
from tests.helpers import ProcessPool, eventually, local_dirs, spec
from tests.nats_cluster import LocalNatsCluster

pytestmark = pytest.mark.e2e


async def test_a_three_node_cluster_loses_no_task_when_its_stream_leader_and_then_two_nodes_die(
    tmp_path: Path, prefix: str
) -> None:
    cluster = LocalNatsCluster(tmp_path / "nats").start()
    db = tmp_path / "claw.db"
    env = child_env(
        CLAW_NATS_URL=cluster.url,
        CLAW_NATS_PREFIX=prefix,
        CLAW_NATS_CONNECT_RETRY_S="60",
        CLAW_COORDINATOR_DB_PATH=str(db),
        CLAW_WORKER_HEARTBEAT_INTERVAL_S="1.0",
        CLAW_WORKER_IDLE_POLL_INTERVAL_S="0.5",
        CLAW_LOG_FORMAT="json",
        **local_dirs(tmp_path),
    )
    pool = ProcessPool(env, tmp_path)
    client: ClawClient | None = None
    try:
        pool.spawn("coordinator", "coordinator", "start")
        for node_id in ("w1", "w2"):
            pool.spawn("worker", "worker", "start", "--node-id", node_id, "--concurrency", "4")
        client = await ClawClient.connect(NatsSettings(url=cluster.url, prefix=prefix))

        async def both_online() -> bool:
            try:
                return sum(n.status == "online" for n in await client.nodes()) == 2
            except ClawError:
                return False

        await eventually(both_online, timeout_s=90, interval_s=0.5, what="two workers on a fresh 3-node cluster")

        ids: list[str] = []
        stalls: list[float] = []

        async def produce(count: int) -> None:
            for i in range(count):
                started = time.monotonic()
                [result] = await client.submit_many([spec("sleep", {"seconds": 0.1, "n": i})], retry_for_s=120)
                stalls.append(time.monotonic() - started)
                ids.append(result.task_id)
                await asyncio.sleep(0.05)  # a steady load, not synchronisation

        producer = asyncio.create_task(produce(80))
        await eventually(lambda: len(ids) >= 20, timeout_s=60, what="submits before the kill")
        leader = cluster.stream_leader(f"{prefix.upper()}_TASKS")
        cluster.named(leader).kill()
        await asyncio.wait_for(producer, 240)
        final = await client.wait(ids, timeout_s=120)
        assert set(final.values()) == {TaskState.SUCCEEDED}, final
        print(f"\nstream leader {leader} SIGKILLed under load: longest submit stall {max(stalls):.2f} s")
        cluster.restart(leader)

        # Two of three servers gone: no quorum. The coordinator cannot renew its lease (a KV in
        # JetStream), so it may write nothing: a submit is refused at once, saying why, not stored.
        survivors = [s for s in cluster.servers if s.options.server_name != leader][:1]
        lost = [s.options.server_name or "" for s in cluster.servers if s not in survivors]
        for name in lost:
            cluster.named(name).kill()
        refused: list[tuple[str, str]] = []

        async def refusal() -> bool:
            task_id = new_id()
            try:
                result = await client.submit(spec("echo", {"no_quorum": True}, task_id=task_id))
                others.append(f"accepted: {result.state} {result.note}")
            except ClawError as exc:
                if "cannot renew its lease" in str(exc):
                    refused.append((task_id, str(exc)))
                    return True
                others.append(f"{type(exc).__name__}: {exc}")
            return False

        others: list[str] = []
        try:
            await eventually(refusal, timeout_s=60, interval_s=0.5, what="a clear refusal without quorum")
        except AssertionError:
            raise AssertionError(f"no clear refusal without quorum; the last answers: {others[-3:]}") from None
        for name in lost:
            cluster.restart(name)

        async def accepted_again() -> str | None:
            try:
                return (await client.submit(spec("echo", {"after": True}))).task_id
            except ClawError:
                return None

        after = await eventually(accepted_again, timeout_s=90, interval_s=1.0, what="submits accepted again")
        assert (await client.wait([after], timeout_s=60))[after] == TaskState.SUCCEEDED
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            states = dict(conn.execute("SELECT task_id, state FROM tasks").fetchall())
        assert all(states[t] == "succeeded" for t in ids)
        assert refused[0][0] not in states, "a refused submit was stored"
        print(f"without quorum: {refused[0][1]}")
    finally:
        if client is not None:
            await client.close()
        pool.stop_all()
        cluster.stop()
