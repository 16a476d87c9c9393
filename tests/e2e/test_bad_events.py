"""Bad events on the bus never stop the coordinator: they are quarantined, acked, and intake goes on.

Anyone on an open bus can publish on `<prefix>.events.<node_id>.<task_id>`. A single `succeeded` event for a task
held for approval once raised `IllegalTransitionError` in the event intake: the coordinator exited 1,
and every restart exited again when the unacked event came back. Here a raw nats-py client publishes
that exact event, then more bad ones while the coordinator is down, and the coordinator (a real
`claw coordinator start` process) must record each in the quarantine (`claw quarantine list`) and
keep serving.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import nats
import pytest

from common.events import TaskSucceeded
from common.ids import new_id
from communication.codec import encode
from tests.helpers import ClawProcess, ProcessPool, wait_until

pytestmark = pytest.mark.e2e


def start_coordinator(pool: ProcessPool) -> ClawProcess:
    coordinator = pool.spawn("coordinator", "coordinator", "start")
    wait_until(lambda: pool.run("status", "--json").returncode == 0, timeout_s=40, interval_s=0.3, what="coordinator")
    return coordinator


def quarantined(pool: ProcessPool) -> list[dict[str, Any]]:
    result = pool.run("quarantine", "list", "--json")
    assert result.returncode == 0, result.stderr
    entries: list[dict[str, Any]] = json.loads(result.stdout)
    return entries


def held_task(pool: ProcessPool) -> str:
    """A task the guard holds for approval (http.request is `write_external`)."""
    result = pool.run("submit", "http.request", "--input", '{"url": "http://127.0.0.1:9/"}', "--json")
    assert result.returncode == 0, result.stderr
    [submitted] = json.loads(result.stdout)
    assert submitted["state"] == "waiting_approval", submitted
    return str(submitted["task_id"])


def forged_success(task_id: str) -> bytes:
    return encode(
        TaskSucceeded(
            event_id=new_id(), task_id=task_id, attempt=1, node_id="intruder", at=time.time(),
            result=b'{"forged": true}', started_at=time.time(),  # type: ignore[arg-type]
        )
    )  # fmt: skip


def state_of(pool: ProcessPool, task_id: str) -> str:
    result = pool.run("task", "show", task_id, "--json")
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["state"])


async def test_an_illegal_event_is_quarantined_and_the_coordinator_keeps_serving_also_after_a_restart(
    processes: ProcessPool, nats_server: Any, prefix: str
) -> None:
    coordinator = start_coordinator(processes)
    processes.spawn("worker", "worker", "start", "--node-id", "w1")
    wait_until(lambda: "w1" in processes.run("nodes").stdout, timeout_s=40, interval_s=0.3, what="worker online")
    held = held_task(processes)
    nc = await nats.connect(nats_server.client_url)
    try:
        js = nc.jetstream()
        # The probe of the issue: one `succeeded` for a task waiting for approval.
        await js.publish(f"{prefix}.events.intruder.{held}", forged_success(held))
        [entry] = wait_until(lambda: quarantined(processes), timeout_s=30, what="the event in quarantine")
        assert entry["task_id"] == held and entry["kind"] == "succeeded"
        assert "waiting_approval" in entry["reason"] and "succeeded" in entry["reason"]
        assert entry["subject"] == f"{prefix}.events.intruder.{held}" and entry["stream_seq"] >= 1
        assert coordinator.alive
        assert state_of(processes, held) == "waiting_approval"
        ok = processes.run("submit", "echo", "--input", '{"still": "serving"}', "--wait")
        assert ok.returncode == 0, ok.stderr

        # Bad events waiting in the stream when a coordinator starts: it quarantines them and stays up.
        assert coordinator.stop() == 0
        await js.publish(f"{prefix}.events.intruder.{held}", forged_success(held))
        await js.publish(f"{prefix}.events.intruder.{held}", b"\x00\xff not an event")
        await js.publish(f"{prefix}.events.intruder.{new_id()}", b'{"kind": "succeeded", "task_id": 7}')
        coordinator = start_coordinator(processes)
        entries = wait_until(
            lambda: (found := quarantined(processes)) and len(found) == 4 and found, timeout_s=30, what="4 entries"
        )
        assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)  # newest first
        reasons = [e["reason"] for e in entries]
        assert "undecodable" in reasons[1] and "undecodable" in reasons[0], reasons
        # A redelivery (the events' ack wait is 10 s) would fold them again: the coordinator is still up
        # and has not quarantined anything twice.
        ok = processes.run("submit", "echo", "--input", '{"after": "restart"}', "--wait")
        assert ok.returncode == 0, ok.stderr
        assert coordinator.alive and len(quarantined(processes)) == 4
        assert state_of(processes, held) == "waiting_approval"

        table = processes.run("quarantine", "list")
        assert table.returncode == 0 and held in table.stdout and "undecodable" in table.stdout
        assert "\\x00\\xff not an event" in processes.run("quarantine", "list", "--task", held).stdout
    finally:
        await nc.close()
    coordinator.signal(signal.SIGTERM)
    assert coordinator.popen.wait(30) == 0
    log = coordinator.output()
    assert "events.quarantined" in log and "Traceback" not in log
