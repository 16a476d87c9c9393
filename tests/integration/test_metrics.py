"""Metrics and alerts of an in-process coordinator and worker against a real nats-server; `/metrics`
is fetched over real HTTP and parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from common.config import ClawConfig
from common.models import EventView
from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from coordinator.alerts import ALERTS_TASK_ID
from coordinator.service import Coordinator
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
        status = await client.status(window_s=900)
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
    assert value(samples, "claw_alert_active", alert="failure_rate") == 0  # 3 of 23 is under 20 %
    assert (value(samples, "process_resident_memory_bytes") or 0) > 0

    # The same run through `claw status`: the window's rates, run times and the DLQ.
    window = status.window
    assert window is not None and window.window_s == 900
    assert (window.finished, window.by_state) == (23, {"succeeded": 20, "dead": 3})
    assert window.completion_rate == pytest.approx(20 / 23)
    assert window.failure_rate == pytest.approx(3 / 23)
    assert window.run_mean_s is not None and window.run_mean_s >= 0
    assert window.run_p95_s is not None and window.run_p95_s >= 0
    assert (status.dlq_messages, status.metrics_port, status.alerts) == (3, port, [])

    # Stopped with the coordinator: nothing listens any more.
    with pytest.raises(urllib.error.URLError):
        await scrape(port)


async def _equals(awaitable: object, expected: object) -> bool:
    return await awaitable == expected  # type: ignore[misc]


def alert_config(nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, **coordinator: object) -> ClawConfig:
    # Evaluated by the test (`alerts.evaluate()`), not by the loop: the loop's next turn is an hour away.
    settings = {"alert_interval_s": 3600.0, "alert_window_s": 3600.0, **coordinator}
    return make_config(nats_server, prefix, tmp_path, coordinator=settings)


async def alert_events(coordinator: Coordinator) -> list[EventView]:
    return list(reversed(await coordinator.queries.recent_events(ALERTS_TASK_ID, limit=100)))


def event_data(event: EventView) -> dict[str, object]:
    data: dict[str, object] = msgspec.json.decode(bytes(event.data))
    return data


async def test_failure_alert_fires_only_once_the_rate_passes_the_threshold_and_resolves(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    """At least 10 finished tasks are judged; a failure rate of exactly 20 % does not fire."""
    config = alert_config(
        nats_server, prefix, tmp_path, alert_min_tasks=10, alert_max_failure=0.2, alert_min_completion=0.0
    )
    echo, fail = spec("echo"), spec("fail", {"message": "boom"})
    async with running_worker(config), connected_client(config) as client:
        async with running_coordinator(config) as coordinator:
            await wait_nodes_online(client, 1)
            await run_all(client, [fail])
            assert await coordinator.alerts.evaluate() == []  # 1 of 1 failed, but 1 task is too few to judge
            await run_all(client, [echo] * 9)
            assert await coordinator.alerts.evaluate() == []  # 1 of 10: 10 %
            await run_all(client, [echo] * 3 + [fail] * 2)
            assert await coordinator.alerts.evaluate() == []  # 3 of 15: exactly 20 %, not above
            assert await alert_events(coordinator) == []

            await run_all(client, [fail])  # 4 of 16: 25 %
            with capture_logs() as logs:
                [alert] = await coordinator.alerts.evaluate()
            assert (alert.name, alert.rate, alert.threshold, alert.finished) == ("failure_rate", 0.25, 0.2, 16)
            assert "failure rate 25.0 % is above 20.0 %" in alert.message
            [fired] = await alert_events(coordinator)
            assert fired.kind == "alert.failure_rate"
            assert event_data(fired) | {"message": ""} == {
                "alert": "failure_rate", "rate": 0.25, "threshold": 0.2, "window_s": 3600.0, "finished": 16,
                "message": "",
            }  # fmt: skip
            assert [(e["event"], e["log_level"], e["alert"]) for e in logs] == [
                ("alert.firing", "warning", "failure_rate")
            ]
            await coordinator.alerts.evaluate()  # still firing: nothing new is recorded
            assert len(await alert_events(coordinator)) == 1
            assert [a.name for a in (await client.status()).alerts] == ["failure_rate"]

        # A restarted coordinator picks the alert up from the event log instead of firing it again.
        async with running_coordinator(config) as coordinator:
            assert [(a.name, a.since) for a in coordinator.alerts.active()] == [("failure_rate", fired.at)]
            await coordinator.alerts.evaluate()
            assert len(await alert_events(coordinator)) == 1
            await run_all(client, [echo] * 5)  # 4 of 21: 19 %
            assert await coordinator.alerts.evaluate() == []
            resolved = (await alert_events(coordinator))[-1]
            assert resolved.kind == "alert.resolved"
            assert event_data(resolved)["alert"] == "failure_rate"
            assert event_data(resolved)["rate"] == pytest.approx(4 / 21, abs=1e-6)
            assert (await client.status()).alerts == []
            assert (await client.audit_verify()).ok  # alert events are part of the hash chain


async def test_completion_alert_fires_when_cancellations_pull_completion_below_the_minimum(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = alert_config(
        nats_server, prefix, tmp_path, alert_min_tasks=4, alert_min_completion=0.8, alert_max_failure=1.0
    )
    async with running_coordinator(config) as coordinator, running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        await run_all(client, [spec("echo")] * 4)

        async def cancel_one() -> None:
            submitted = await client.submit(spec("sleep", {"seconds": 60}))
            await client.cancel(submitted.task_id)

        await cancel_one()
        assert await coordinator.alerts.evaluate() == []  # 4 of 5 completed: exactly 80 %
        await cancel_one()
        [alert] = await coordinator.alerts.evaluate()  # 4 of 6
        assert (alert.name, alert.finished) == ("completion_rate", 6)
        assert alert.rate == pytest.approx(4 / 6)
        assert "completion rate 66.7 % is below 80.0 %: 4 of the 6 tasks" in alert.message
        assert [e.kind for e in await alert_events(coordinator)] == ["alert.completion_rate"]
