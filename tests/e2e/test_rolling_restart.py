"""The upgrade path: every process of a cluster restarted one by one under a steady submit load -
each worker, then the coordinator, then nats-server - with no task lost and none run twice.

Real `claw` processes and a file-backed nats-server restarted on the same ports and store; the
producer is a client that retries with its own task ids (`submit_many(retry_for_s=...)`), as an
application that must not lose work would.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import pytest

from cli.processes import child_env
from common.config import NatsSettings
from common.errors import ClawError
from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from tests.helpers import ClawProcess, ProcessPool, eventually, local_dirs, spec

pytestmark = pytest.mark.e2e

TASKS = 120


async def _produce(client: ClawClient, ids: list[str], done: asyncio.Event) -> None:
    for i in range(TASKS):
        [result] = await client.submit_many([spec("sleep", {"seconds": 0.2, "n": i})], retry_for_s=120)
        ids.append(result.task_id)
        await asyncio.sleep(0.05)  # a steady load, not synchronisation
    done.set()


def _runs(db: Path) -> tuple[dict[str, int], int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        attempts = dict(conn.execute("SELECT task_id, COUNT(*) FROM task_attempts GROUP BY task_id").fetchall())
        doubles = conn.execute(
            "SELECT COUNT(*) FROM (SELECT task_id FROM events WHERE to_state = 'succeeded' "
            "GROUP BY task_id HAVING COUNT(*) > 1)"
        ).fetchone()[0]
    return attempts, int(doubles)


async def test_restarting_every_process_one_by_one_under_load_loses_and_doubles_nothing(
    tmp_path: Path, prefix: str
) -> None:
    server = EmbeddedNatsServer(NatsServerOptions(store_dir=tmp_path / "nats", port=0, http_port=0)).start()
    ports = (int(server.client_url.rsplit(":", 1)[1]), int(server.monitor_url.rsplit(":", 1)[1]))
    db = tmp_path / "claw.db"
    env = child_env(
        CLAW_NATS_URL=server.client_url,
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
    producer: asyncio.Task[None] | None = None
    try:
        coordinator = pool.spawn("coordinator", "coordinator", "start")
        workers = {
            n: pool.spawn("worker", "worker", "start", "--node-id", n, "--concurrency", "4") for n in ("w1", "w2")
        }
        client = await ClawClient.connect(NatsSettings(url=server.client_url, prefix=prefix))

        async def online(node_id: str) -> bool:
            try:
                return any(n.node_id == node_id and n.status == "online" for n in await client.nodes())
            except ClawError:  # the coordinator is restarting: not yet
                return False

        for node_id in workers:
            await eventually(lambda n=node_id: online(n), timeout_s=40, what=f"{node_id} online")
        ids: list[str] = []
        produced = asyncio.Event()
        producer = asyncio.create_task(_produce(client, ids, produced))

        async def stop_gracefully(process: ClawProcess) -> None:
            process.signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.popen.wait, 60) == 0, process.output()[-2000:]

        async def progressed(by: int) -> None:
            target = len(ids) + by
            await eventually(lambda: len(ids) >= target or produced.is_set(), timeout_s=60, what="more submits")

        await progressed(10)
        for node_id, process in workers.items():
            await stop_gracefully(process)
            pool.spawn("worker", "worker", "start", "--node-id", node_id, "--concurrency", "4")
            await eventually(lambda n=node_id: online(n), timeout_s=40, what=f"{node_id} back online")
            await progressed(10)

        await stop_gracefully(coordinator)
        pool.spawn("coordinator", "coordinator", "start")
        await progressed(10)

        await asyncio.to_thread(server.stop)
        server = EmbeddedNatsServer(NatsServerOptions(store_dir=tmp_path / "nats", port=ports[0], http_port=ports[1]))
        await server.start_async()

        await asyncio.wait_for(producer, 240)
        final = await client.wait(ids, timeout_s=120)
        assert len(set(ids)) == TASKS
        assert set(final.values()) == {TaskState.SUCCEEDED}, final
        attempts, doubles = _runs(db)
        assert doubles == 0
        ran_twice = {t: n for t, n in attempts.items() if n > 1}
        assert not ran_twice, f"tasks run more than once across the restarts: {ran_twice}"
    finally:
        if producer is not None and not producer.done():
            producer.cancel()
        if client is not None:
            await client.close()
        pool.stop_all()
        server.stop()
