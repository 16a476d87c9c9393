"""Metrics of an in-process coordinator and worker against a real nats-server; `/metrics`
is fetched over real HTTP and parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from tests.conftest import make_config
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int | None) -> tuple[str, str]:
    """(Content-Type, body) of GET /metrics."""
    assert port is not None

    def get() -> tuple[str, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.headers["Content-Type"], response.read().decode()

    return await asyncio.to_thread(get)


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """Family name -> type, and (sample name, labels) -> value."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def run_all(client: ClawClient, specs: Iterable[object]) -> dict[str, TaskState]:
    results = await client.submit_many(list(specs))  # type: ignore[arg-type]
    return await client.wait([r.task_id for r in results], timeout_s=30)


async def test_metrics_endpoint_parses_and_its_counters_match_the_tasks_run(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = make_config(nats_server, prefix, tmp_path, coordinator={"metrics_port": 0, "metrics_host": "127.0.0.1"})
    async with (
        running_coordinator(config) as coordinator,
        running_worker(config),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        final = await run_all(client, [spec("echo", {"i": i}) for i in range(20)])
        final |= await run_all(client, [spec("fail", {"message": "no"}) for _ in range(3)])
        assert list(final.values()).count(TaskState.SUCCEEDED) == 20
        assert list(final.values()).count(TaskState.DEAD) == 3
        # Dead letters go out after the commit that made the tasks dead.
        await eventually(lambda: _equals(coordinator.probe.dead_letters(), 3), what="3 dead letters")
        await coordinator.refresh_metrics()  # the maintenance loop does this every metrics_refresh_s
        content_type, text = await scrape(coordinator.metrics_port)
        status = await client.status()
        port = coordinator.metrics_port

    assert content_type.startswith("text/plain")
    types, samples = parse(text)
    assert types["claw_tasks_submitted"] == "counter"
    assert types["claw_task_run_seconds"] == "histogram"
    assert types["claw_queue_depth"] == "gauge"
    assert value(samples, "claw_tasks_submitted_total", skill="echo") == 20
    assert value(samples, "claw_tasks_submitted_total", skill="fail") == 3
    assert value(samples, "claw_tasks_succeeded_total", skill="echo") == 20
    assert value(samples, "claw_tasks_dead_total", skill="fail") == 3
    assert value(samples, "claw_tasks_succeeded_total", skill="fail") is None
    assert value(samples, "claw_tasks_failed_total", skill="fail") is None  # dead-lettering is on: dead, not failed
    for skill, count in (("echo", 20), ("fail", 3)):
        for histogram in ("claw_task_run_seconds", "claw_task_queue_wait_seconds"):
            assert value(samples, f"{histogram}_count", skill=skill) == count, (histogram, skill)
            assert value(samples, f"{histogram}_bucket", skill=skill, le="+Inf") == count, (histogram, skill)
            assert value(samples, f"{histogram}_bucket", skill=skill, le="3600.0") == count, (histogram, skill)
    assert value(samples, "claw_tasks", state="succeeded") == 20
    assert value(samples, "claw_tasks", state="dead") == 3
    assert value(samples, "claw_tasks", state="queued") == 0
    assert value(samples, "claw_tasks_running") == 0
    assert value(samples, "claw_nodes_online") == 1
    assert value(samples, "claw_queue_depth", skill="echo", priority="normal") == 0
    assert value(samples, "claw_queue_ack_pending", skill="echo", priority="normal") == 0
    assert value(samples, "claw_dlq_messages") == 3
    assert (value(samples, "process_resident_memory_bytes") or 0) > 0

    assert status.metrics_port == port

    # Stopped with the coordinator: nothing listens any more.
    with pytest.raises(urllib.error.URLError):
        await scrape(port)


async def _equals(awaitable: object, expected: object) -> bool:
    return await awaitable == expected  # type: ignore[misc]
