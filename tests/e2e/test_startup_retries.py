"""Start-up calls to NATS retry until a deadline: a worker whose first JetStream requests time out
(a fresh replicated cluster still electing its leaders, a congested link) starts anyway, and one
that cannot get an answer at all stops with one line naming what it waited for.

Real processes; the fault is injected by a userspace TCP proxy between the worker and the real
nats-server (tests/tcp_proxy.py), which holds the worker's first JetStream request.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.helpers import ProcessPool, eventually
from tests.tcp_proxy import StallingProxy

pytestmark = pytest.mark.e2e


def _server_port(processes: ProcessPool) -> int:
    return int(processes.env["CLAW_NATS_URL"].rsplit(":", 1)[1])


def _online(processes: ProcessPool, node_id: str) -> bool:
    result = processes.run("nodes", "--json")
    return result.returncode == 0 and any(
        n["node_id"] == node_id and n["status"] == "online" for n in json.loads(result.stdout)
    )


async def test_a_worker_whose_first_jetstream_requests_time_out_starts_anyway(processes: ProcessPool) -> None:
    processes.spawn("coordinator", "coordinator", "start")
    # Longer than a JetStream request's 5 s timeout: without retries the start fails.
    async with StallingProxy.running(_server_port(processes), stall_s=7.0) as proxy:
        worker = processes.spawn("worker", "worker", "start", "--node-id", "slow1", env={"CLAW_NATS_URL": proxy.url})

        # The proxy runs on this event loop: wait without blocking it (the CLI call runs in a thread).
        async def online() -> bool:
            return await asyncio.to_thread(_online, processes, "slow1")

        await eventually(online, timeout_s=60, interval_s=0.5, what="the worker online")
        assert proxy.stalls >= 1
        assert worker.popen.poll() is None
        retried = [json.loads(line) for line in worker.output().splitlines() if "startup.retrying" in line]
        assert retried and retried[0]["waiting_for"] == "the JetStream streams", worker.output()[-2000:]


async def test_a_worker_that_gets_no_answer_stops_at_the_deadline_naming_what_it_waited_for(
    processes: ProcessPool,
) -> None:
    async with StallingProxy.running(_server_port(processes), stall_s=3600.0) as proxy:
        worker = processes.spawn(
            "worker",
            "worker",
            "start",
            "--node-id",
            "slow2",
            env={"CLAW_NATS_URL": proxy.url, "CLAW_NATS_STARTUP_DEADLINE_S": "3"},
        )
        code = await asyncio.to_thread(worker.popen.wait, 60)
        output = worker.output()
        assert code != 0
        assert "Traceback" not in output, output[-3000:]
        assert "gave up after 3 s waiting for the JetStream streams" in output, output[-3000:]
