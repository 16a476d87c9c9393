"""One coordinator per prefix, with real `claw coordinator start` processes: a second one refuses to
start, a killed one's lease lapses within its TTL, and a frozen one that was taken over writes nothing.

Two coordinators once shared the events consumer of one prefix and each folded part of the events
into its own database: 38 of 40 finished tasks stayed `queued` in the first one's.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from common.config import NatsSettings
from common.states import TaskState
from communication.api_client import ClawClient
from tests.helpers import ClawProcess, ProcessPool, spec, wait_until

pytestmark = pytest.mark.e2e

# A short lease keeps the takeover test quick; the value is a setting like any other.
SHORT_LEASE = {"CLAW_COORDINATOR_LEASE_TTL_S": "3", "CLAW_COORDINATOR_LEASE_RENEW_INTERVAL_S": "0.5"}


def start_coordinator(pool: ProcessPool, env: dict[str, str] | None = None) -> ClawProcess:
    coordinator = pool.spawn("coordinator", "coordinator", "start", env=env)
    wait_until(
        lambda: '"coordinator.ready"' in coordinator.output() or not coordinator.alive,
        timeout_s=60,
        what="coordinator ready",
    )
    assert coordinator.alive, coordinator.output()
    return coordinator


def log_lines(process: ClawProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in process.output().splitlines() if line.startswith("{")]


def at(process: ClawProcess, event: str) -> datetime:
    [line] = [e for e in log_lines(process) if e["event"] == event]
    return datetime.fromisoformat(line["timestamp"])


def test_a_second_coordinator_refuses_to_start_with_one_line_naming_the_first(processes: ProcessPool) -> None:
    first = start_coordinator(processes)
    result = processes.run("coordinator", "start", timeout_s=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: another coordinator is running for prefix"), result.stderr
    assert f"pid {first.popen.pid}" in lines[-1] and "since" in lines[-1] and "Traceback" not in result.stderr
    assert first.alive and processes.run("status").returncode == 0


def test_a_killed_coordinator_blocks_a_restart_for_at_most_its_lease_ttl_and_a_clean_stop_not_at_all(
    processes: ProcessPool,
) -> None:
    ttl_s = 10.0  # the shipped default
    first = start_coordinator(processes)
    first.signal(signal.SIGKILL)
    first.popen.wait(10)
    second = start_coordinator(processes)
    waited = (at(second, "lease.acquired") - at(second, "lease.waiting")).total_seconds()
    print(f"\nrestart after SIGKILL waited {waited:.1f} s for the dead coordinator's lease (TTL {ttl_s:g} s)")
    assert waited <= ttl_s + 2.0  # the server expires the entry on time; 2 s for a loaded machine
    assert second.stop() == 0
    third = start_coordinator(processes)
    assert not [e for e in log_lines(third) if e["event"] == "lease.waiting"]  # released at once on stop


async def test_a_frozen_coordinator_that_was_taken_over_stops_without_writing(
    processes: ProcessPool, tmp_path: Path
) -> None:
    first = start_coordinator(processes, SHORT_LEASE)
    processes.spawn("worker", "worker", "start", "--node-id", "w1", "--concurrency", "8")
    wait_until(lambda: "w1" in processes.run("nodes").stdout, timeout_s=40, interval_s=0.3, what="worker online")
    before = processes.run("submit", "sleep", "--input", '{"seconds": 1.5}', "--json")
    assert before.returncode == 0, before.stderr
    first.signal(signal.SIGSTOP)  # frozen with the task running: its events come while it sleeps

    # Same prefix, same database file: the restart a supervisor would make.
    second = start_coordinator(processes, SHORT_LEASE)
    # Until the frozen one's connection is dropped, NATS still routes some API requests to it (they
    # time out): a client that retries with ids of its own is not disturbed.
    settings = NatsSettings(url=processes.env["CLAW_NATS_URL"], prefix=processes.env["CLAW_NATS_PREFIX"])
    async with await ClawClient.connect(settings) as client:
        results = await client.submit_many([spec("sleep", {"seconds": 0.2, "i": i}) for i in range(20)], retry_for_s=60)
        task_ids = [json.loads(before.stdout)[0]["task_id"], *(r.task_id for r in results)]

        first.signal(signal.SIGCONT)
        assert await asyncio.to_thread(first.popen.wait, 30) == 1
        output = first.output()
        assert "coordinator.lease_lost" in output and re.search(r"taken over by coordinator-\S+ \(host", output)
        assert output.strip().splitlines()[-1].startswith("error: this coordinator lost its lease"), output[-2000:]

        # The second one has the whole truth: every task finished once, and the chain of the event
        # log (which a write by the stale first one would have forked) is intact.
        assert set((await client.wait(task_ids, timeout_s=60)).values()) == {TaskState.SUCCEEDED}
    assert second.alive
    audit = processes.run("audit", "verify")
    assert audit.returncode == 0 and "intact" in audit.stdout, audit.stdout + audit.stderr
    with sqlite3.connect(f"file:{tmp_path / 'claw.db'}?mode=ro", uri=True) as db:
        doubles = db.execute(
            "SELECT COUNT(*) FROM (SELECT task_id FROM events WHERE to_state = 'succeeded' "
            "GROUP BY task_id HAVING COUNT(*) > 1)"
        ).fetchone()[0]
    assert doubles == 0
