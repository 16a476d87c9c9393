"""The quant skills installed from their folders into a real worker (coordinator and worker in this
process, on a real nats-server): each runs its example input as an ordinary task and its result
meets its output schema; the reports store their artifacts; propose_orders waits for a person."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from common.config import ClawConfig
from common.errors import InvalidInputError
from common.models import TaskView
from common.skills import load_manifest, validate_output
from common.states import TaskState
from communication.api_client import ClawClient
from storage.artifacts import open_artifact_store
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online
from tests.skill_modules import SKILLS, example_input
from tests.unit.test_quant_chart import decode
from worker.service import Worker

QUANT = sorted(p.parent.name for p in (SKILLS / "quant").glob("*/skill.yaml"))


async def install(client: ClawClient, worker: Worker, folders: list[str]) -> None:
    """Install skill folders (examples/skills/<folder>) and wait until the worker loaded them."""
    names = set()
    for folder in folders:
        reply = await client.install_skill(SKILLS / folder)
        names.add(reply.entry.name)
    await eventually(lambda: names <= set(worker.skills.names()), timeout_s=30, what=f"the worker loads {names}")


async def finish(client: ClawClient, task_id: str) -> tuple[TaskView, Any]:
    """Wait for a task to end; its view and decoded result."""
    await client.wait([task_id], timeout_s=60, poll_s=0.1)
    task = await client.get_task(task_id)
    return task, msgspec.json.decode(bytes(task.result))


async def test_each_quant_skill_runs_its_example_as_a_task_and_meets_its_output_schema(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config) as worker, connected_client(config) as client:
        await wait_nodes_online(client, 1)
        await install(client, worker, [f"quant/{folder}" for folder in QUANT])
        submitted = {
            folder: (await client.submit(spec(f"quant.{folder}", example_input(f"quant/{folder}")))).task_id
            for folder in QUANT
        }
        held = submitted["propose_orders"]
        await eventually(lambda: _held(client, held), what="propose_orders waits for approval")
        async with connected_client(config, identity="alice") as alice:  # not the submitter
            await alice.approve(held)
        outcomes = {folder: await finish(client, task_id) for folder, task_id in submitted.items()}
        report_task = outcomes["backtest_report"][0]
        store = await open_artifact_store(config.artifacts)
        try:
            chart = next(a for a in report_task.artifacts if a.name == "equity_curve.png")
            png = await store.get_bytes(chart.key)
        finally:
            await store.close()

    for folder, (task, result) in outcomes.items():
        assert task.state == TaskState.SUCCEEDED, (folder, task.error_type, task.error_message)
        assert task.attempts == 1, folder
        validate_output(load_manifest(SKILLS / "quant" / folder), result)
    assert [e.kind for e in outcomes["propose_orders"][0].events][:3] == ["submitted", "held", "approved"]
    report_result = outcomes["backtest_report"][1]
    assert sorted(a.name for a in report_task.artifacts) == ["backtest_report.md", "equity_curve.png"]
    assert report_result["chart"] == {"name": "equity_curve.png", "sha256": chart.sha256, "size": chart.size,
                                      "content_type": "image/png"}  # fmt: skip
    assert decode(png)[:2] == (800, 420)
    # The hand-computed case (tests/unit/test_quant_backtest.py) is the back-test's example input.
    assert outcomes["backtest"][1]["metrics"]["sharpe"] == pytest.approx(14.4**0.5)
    execution = outcomes["execution_report"]
    assert [a.name for a in execution[0].artifacts] == ["execution_report.md"]
    assert execution[1]["markdown"].startswith("# Execution: SYN, 2024-12-16\n")


async def _held(client: ClawClient, task_id: str) -> bool:
    return (await client.get_task(task_id, history=False)).state == TaskState.WAITING_APPROVAL


async def test_a_bad_request_fails_the_task_at_once_with_the_program_reason(config: ClawConfig) -> None:
    """A command skill's exit 2 is a permanent failure: no retry, and the one line it printed."""
    async with running_coordinator(config), running_worker(config) as worker, connected_client(config) as client:
        await wait_nodes_online(client, 1)
        await install(client, worker, ["quant/backtest"])
        signals = {"dates": ["2024-01-02", "2024-01-03"], "close": [1, 2], "position": [0]}
        submitted = await client.submit(spec("quant.backtest", {"signals": signals}))
        task, _ = await finish(client, submitted.task_id)
    assert task.state in (TaskState.FAILED, TaskState.DEAD) and task.attempts == 1
    assert task.error_message == (
        "quant.backtest exited with 2: quant.backtest: signals: 2 dates, 2 closes and 1 positions differ"
    )


async def test_the_schema_refuses_a_request_before_any_task_exists(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config) as worker, connected_client(config) as client:
        await wait_nodes_online(client, 1)
        await install(client, worker, ["quant/fetch_market_data"])
        with pytest.raises(InvalidInputError) as refused:
            await client.submit(spec("quant.fetch_market_data", {"days": 5000}))
    assert "input of quant.fetch_market_data: field 'days': 5000 is greater than the maximum of 1260" in str(
        refused.value
    )
