"""A standby coordinator takes over when the active one is SIGKILLed under a steady submit load:
every task succeeds exactly once; and a frozen active that wakes up after the takeover writes nothing.

A partition of the active one (a userspace TCP proxy between it and nats-server that holds every
byte) is taken over the same way, and the old one stops when the partition heals.

Real `claw coordinator start --replicate` processes, each with its own database (as on two
machines), real workers and a real nats-server; the producer retries with its own task ids
(`submit_many(retry_for_s=...)`), as an application that must not lose work would. With
--chaos-full the kill is repeated (the standby of each round is the next round's active) and the
takeover times are printed (p50, max).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import statistics
import time
from pathlib import Path

import pytest

from cli.processes import Child, child_env
from common.config import CoordinatorSettings, NatsSettings
from common.errors import ClawError
from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from tests.helpers import ProcessPool, eventually, local_dirs, spec
from tests.tcp_proxy import StallingProxy

pytestmark = pytest.mark.e2e


async def _produce(client: ClawClient, count: int, ids: list[str], done: asyncio.Event) -> None:
    for i in range(count):
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


def _env(server: EmbeddedNatsServer, prefix: str, tmp_path: Path) -> dict[str, str]:
    return child_env(
        CLAW_NATS_URL=server.client_url,
        CLAW_NATS_MONITOR_URL=server.monitor_url,
        CLAW_NATS_PREFIX=prefix,
        # The shipped lease settings (lease_ttl_s 4, renewed every 1 s): what the takeover figure is for.
        CLAW_WORKER_HEARTBEAT_INTERVAL_S="1.0",
        CLAW_WORKER_IDLE_POLL_INTERVAL_S="0.5",
        CLAW_LOG_FORMAT="json",
        **local_dirs(tmp_path),
    )


def _coordinator(pool: ProcessPool, db: Path) -> Child:
    return pool.spawn("coordinator", "coordinator", "start", "--replicate", "--db", str(db))


async def _status_shows(pool: ProcessPool, text: str) -> str | None:
    """`claw status`'s output when it holds `text` (else None: asked again)."""
    done = await asyncio.to_thread(pool.run, "status", timeout_s=30)
    return done.stdout if done.returncode == 0 and text in done.stdout else None


async def _logged(process: Child, text: str, timeout_s: float = 60) -> None:
    await eventually(lambda: text in process.output(), timeout_s=timeout_s, what=f"'{text}' in {process.name}")


async def test_a_standby_takes_over_from_a_killed_active_and_every_task_runs_once(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rounds = 5 if request.config.getoption("--chaos-full") else 1
    tasks = 60 * rounds
    pool = ProcessPool(_env(nats_server, prefix, tmp_path), tmp_path)
    client: ClawClient | None = None
    producer: asyncio.Task[None] | None = None
    try:
        dbs = [tmp_path / f"coordinator-{i}.db" for i in range(rounds + 1)]
        active = _coordinator(pool, dbs[0])
        await _logged(active, "coordinator.ready")
        for node_id in ("w1", "w2"):
            pool.spawn("worker", "worker", "start", "--node-id", node_id, "--concurrency", "4")
        client = await ClawClient.connect(NatsSettings(url=nats_server.client_url, prefix=prefix))

        async def online() -> bool:
            try:
                return sum(n.status == "online" for n in await client.nodes()) == 2
            except ClawError:
                return False

        await eventually(online, timeout_s=40, what="2 workers online")
        ids: list[str] = []
        produced = asyncio.Event()
        producer = asyncio.create_task(_produce(client, tasks, ids, produced))
        takeovers: list[float] = []
        epochs: list[int] = []
        for round_no in range(rounds):
            standby = _coordinator(pool, dbs[round_no + 1])
            await _logged(standby, "coordinator.standby")
            # `claw status` names the active coordinator, its epoch and the standby with its lag.
            shown = await eventually(
                lambda s=standby: _status_shows(pool, f"-{s.pid} on "), timeout_s=30, what="the standby in claw status"
            )
            assert f"-{active.pid}, epoch " in shown, shown
            epochs.append(int(shown.split(", epoch ", 1)[1].split(",", 1)[0]))
            target = len(ids) + 20
            await eventually(lambda t=target: len(ids) >= t or produced.is_set(), timeout_s=60, what="more submits")
            active.signal(signal.SIGKILL)
            killed = time.monotonic()
            await _logged(standby, "coordinator.ready")
            takeovers.append(time.monotonic() - killed)
            assert "coordinator.taking_over" in standby.output()
            active = standby
        shown = await eventually(lambda: _status_shows(pool, f"-{active.pid}, epoch "), timeout_s=30, what="status")
        assert int(shown.split(", epoch ", 1)[1].split(",", 1)[0]) > epochs[-1]  # a new epoch
        assert "none reporting" in shown  # no standby left after the last takeover

        await asyncio.wait_for(producer, 240)
        final = await client.wait(ids, timeout_s=120)
        assert len(set(ids)) == tasks
        assert set(final.values()) == {TaskState.SUCCEEDED}, final
        attempts, doubles = _runs(dbs[rounds])
        assert set(attempts) == set(ids)  # the last active's database knows every task
        assert doubles == 0
        ran_twice = {t: n for t, n in attempts.items() if n > 1}
        assert not ran_twice, f"tasks run more than once across the takeovers: {ran_twice}"
        print(
            f"\ntakeover after SIGKILL (default lease_ttl_s {CoordinatorSettings().lease_ttl_s:g}): rounds {rounds}, "
            f"p50 {statistics.median(takeovers):.2f} s, "
            f"max {max(takeovers):.2f} s"
        )
    finally:
        if producer is not None and not producer.done():
            producer.cancel()
        if client is not None:
            await client.close()
        pool.stop_all()


async def test_a_frozen_active_that_wakes_after_the_takeover_writes_nothing(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    pool = ProcessPool(_env(nats_server, prefix, tmp_path), tmp_path)
    client: ClawClient | None = None
    old_db, new_db = tmp_path / "a.db", tmp_path / "b.db"
    try:
        old = _coordinator(pool, old_db)
        await _logged(old, "coordinator.ready")
        new = _coordinator(pool, new_db)
        await _logged(new, "coordinator.standby")
        client = await ClawClient.connect(NatsSettings(url=nats_server.client_url, prefix=prefix))
        [before] = await client.submit_many([spec("echo", {"n": 1})], retry_for_s=60)
        old.signal(signal.SIGSTOP)
        await _logged(new, "coordinator.ready")
        # The frozen process still holds its API subscription (its connection is open): a request
        # routed to it gets no answer, and the client retries it with the same task id.
        [after] = await client.submit_many([spec("echo", {"n": 2})], retry_for_s=60)
        old.signal(signal.SIGCONT)
        # It finds its lease gone (or the stream refuses it) and stops without writing.
        await eventually(lambda: not old.alive, timeout_s=30, what="the old active stops")
        assert old.returncode != 0
        assert "lost its lease" in old.output() or "fenced" in old.output(), old.output()[-2000:]
        with sqlite3.connect(f"file:{old_db}?mode=ro", uri=True) as conn:
            old_ids = {row[0] for row in conn.execute("SELECT task_id FROM tasks")}
        assert before.task_id in old_ids and after.task_id not in old_ids
        view = await client.get_task(before.task_id)
        assert view.task_id == before.task_id  # the new active has what the old one accepted
        # Restarted, the old one rejoins as a standby: its database replaced by the snapshot and the
        # stream, so it holds what the new active accepted; SIGTERM stops a standby cleanly.
        rejoined = _coordinator(pool, old_db)
        await _logged(rejoined, "coordinator.standby")
        await eventually(lambda: _status_shows(pool, f"-{rejoined.pid} on "), timeout_s=30, what="it in claw status")
        with sqlite3.connect(f"file:{old_db}?mode=ro", uri=True) as conn:
            assert conn.execute("SELECT COUNT(*) FROM tasks WHERE task_id = ?", (after.task_id,)).fetchone()[0] == 1
        rejoined.signal(signal.SIGTERM)
        assert await asyncio.to_thread(rejoined.popen.wait, 30) == 0, rejoined.output()[-2000:]
    finally:
        if client is not None:
            await client.close()
        for process in pool.processes:
            if process.alive:
                process.signal(signal.SIGCONT)
        pool.stop_all()


async def test_a_partitioned_active_is_replaced_and_stops_when_the_partition_heals(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    """The active coordinator reaches NATS through a userspace TCP proxy that then holds every byte
    both ways: the standby takes over once the lease lapses; when the partition heals, the old one
    finds its lease taken and stops, with nothing written after the takeover."""
    pool = ProcessPool(_env(nats_server, prefix, tmp_path), tmp_path)
    client: ClawClient | None = None
    old_db, new_db = tmp_path / "a.db", tmp_path / "b.db"
    nats_port = int(nats_server.client_url.rsplit(":", 1)[1])
    async with StallingProxy.running(nats_port, stall_s=0.0, stall_on=b"\x00never") as proxy:
        try:
            old = pool.spawn(
                "coordinator", "coordinator", "start", "--replicate", "--db", str(old_db),
                env={"CLAW_NATS_URL": proxy.url},
            )  # fmt: skip
            await _logged(old, "coordinator.ready")
            new = _coordinator(pool, new_db)
            await _logged(new, "coordinator.standby")
            client = await ClawClient.connect(NatsSettings(url=nats_server.client_url, prefix=prefix))
            [before] = await client.submit_many([spec("echo", {"n": 1})], retry_for_s=60)
            proxy.partition()
            cut = time.monotonic()
            await _logged(new, "coordinator.ready")
            takeover_s = time.monotonic() - cut
            [after] = await client.submit_many([spec("echo", {"n": 2})], retry_for_s=60)
            proxy.heal()
            await eventually(lambda: not old.alive, timeout_s=60, what="the old active stops after the partition")
            assert old.returncode != 0
            assert "lost its lease" in old.output() or "fenced" in old.output(), old.output()[-2000:]
            with sqlite3.connect(f"file:{old_db}?mode=ro", uri=True) as conn:
                old_ids = {row[0] for row in conn.execute("SELECT task_id FROM tasks")}
            assert before.task_id in old_ids and after.task_id not in old_ids
            assert (await client.get_task(before.task_id)).task_id == before.task_id
            ttl_s = CoordinatorSettings().lease_ttl_s
            print(f"\ntakeover after a partition of the active (default lease_ttl_s {ttl_s:g}): {takeover_s:.2f} s")
        finally:
            proxy.heal()
            if client is not None:
                await client.close()
            pool.stop_all()
