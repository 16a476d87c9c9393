"""Workflow runs and schedules belong to a tenant, in a real coordinator and worker (real nats-server,
real SQLite): a run's node tasks are its tenant's (so the tenant's quotas, fair share and usage
apply to them), a rerun keeps the tenant, a `cache: true` node is never served from another tenant's
result, a schedule's fires submit for its tenant, and a bad tenant name is one clear error."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from typing import Any

import msgspec
import pytest
import yaml

from common import api, verbs
from common.config import ClawConfig
from common.errors import InvalidInputError
from common.states import TaskState
from communication.api_client import ClawClient
from tests.helpers import (
    ProcessPool,
    connected_client,
    eventually,
    running_coordinator,
    running_worker,
    wait_nodes_online,
)

SPEC = {
    "name": "pair",
    "nodes": {
        "a": {"skill": "echo", "input": {"k": "=input.k"}, "cache": True},
        "b": {"skill": "echo", "input": {"a": "=nodes.a.output.k"}},
    },
}


async def run(client: ClawClient, input: dict[str, Any], tenant: str | None) -> api.WorkflowRunView:
    raw = msgspec.Raw(json.dumps(input).encode())
    reply = await client.call(verbs.WORKFLOW_RUN, api.WorkflowRunRequest(name="pair", input=raw, tenant=tenant))
    return await finished(client, reply.run_id)


async def finished(client: ClawClient, run_id: str) -> api.WorkflowRunView:
    async def done() -> api.WorkflowRunView | None:
        view = await client.call(verbs.WORKFLOW_SHOW, api.WorkflowRunGetRequest(run_id=run_id))
        return view if view.state in ("succeeded", "failed", "cancelled") else None

    return await eventually(done, timeout_s=60, what=f"run {run_id} to finish")


def tenants_of(config: ClawConfig, view: api.WorkflowRunView) -> dict[str, str]:
    ids = {task_id: node.name for node in view.nodes for task_id in node.task_ids}
    with sqlite3.connect(config.coordinator.db_path) as db:
        rows = db.execute(f"SELECT task_id, tenant FROM tasks WHERE task_id IN ({','.join('?' * len(ids))})", list(ids))
        return {ids[task_id]: tenant for task_id, tenant in rows}


async def test_a_runs_node_tasks_are_its_tenants_and_the_cache_is_per_tenant(
    config: ClawConfig, processes: ProcessPool
) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        await client.call(verbs.WORKFLOW_REGISTER, api.WorkflowSpecRequest(spec=yaml.safe_dump(SPEC)))
        acme = await run(client, {"k": 1}, "acme")
        assert acme.state == "succeeded" and acme.tenant == "acme"
        assert tenants_of(config, acme) == {"a": "acme", "b": "acme"}

        # The same cached node input for another tenant: run, not served from acme's result.
        other = await run(client, {"k": 1}, None)
        other_a = {n.name: n for n in other.nodes}["a"]
        assert other.tenant == "default" and other_a.source == "run"
        assert tenants_of(config, other) == {"a": "default", "b": "default"}
        again = await run(client, {"k": 1}, "acme")
        assert {n.name: n for n in again.nodes}["a"].source == "cached"

        rerun = await client.call(verbs.WORKFLOW_RERUN, api.WorkflowRerunRequest(run_id=acme.run_id, from_node="b"))
        rerun_view = await finished(client, rerun.run_id)
        assert rerun_view.tenant == "acme" and tenants_of(config, rerun_view)["b"] == "acme"

        with pytest.raises(InvalidInputError, match="not a valid tenant name"):
            await client.call(verbs.WORKFLOW_RUN, api.WorkflowRunRequest(name="pair", tenant="no such tenant!"))

        # The command line: `claw workflow run --tenant`, and `show` says whose run it is.
        cli = await asyncio.to_thread(
            processes.run, "workflow", "run", "pair", "--input", '{"k": 9}', "--tenant", "acme", "--wait", "--json"
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        cli_view = await finished(client, json.loads(cli.stdout)["run_id"])
        assert set(tenants_of(config, cli_view).values()) == {"acme"}
        shown = await asyncio.to_thread(processes.run, "workflow", "show", cli_view.run_id)
        assert "  tenant: acme" in shown.stdout.splitlines(), shown.stdout
        bad = await asyncio.to_thread(processes.run, "workflow", "run", "pair", "--tenant", "no such tenant!")
        assert bad.returncode != 0 and "not a valid tenant name" in bad.stderr and "Traceback" not in bad.stderr


async def test_a_schedules_fires_submit_for_its_tenant(config: ClawConfig, processes: ProcessPool) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        await client.call(verbs.WORKFLOW_REGISTER, api.WorkflowSpecRequest(spec=yaml.safe_dump(SPEC)))
        task_schedule = api.ScheduleCreateRequest(name="t", on_event=True, skill="echo", tenant="acme")
        view = await client.create_schedule(task_schedule)
        assert view.tenant == "acme"
        run_schedule = api.ScheduleCreateRequest(
            name="w", on_event=True, workflow="pair", input=msgspec.Raw(b'{"k": 5}'), tenant="acme"
        )
        await client.create_schedule(run_schedule)
        fired_task = await client.trigger_schedule("t", key="one")
        fired_run = await client.trigger_schedule("w", key="one")
        task = await client.get_task(fired_task.target_id or "")
        assert task.tenant == "acme"
        await client.wait([task.task_id], timeout_s=60)
        view_run = await finished(client, fired_run.target_id or "")
        assert view_run.tenant == "acme" and set(tenants_of(config, view_run).values()) == {"acme"}
        with pytest.raises(InvalidInputError, match="not a valid tenant name"):
            await client.create_schedule(
                api.ScheduleCreateRequest(name="bad", on_event=True, skill="echo", tenant="no such tenant!")
            )
        made = await asyncio.to_thread(
            processes.run, "schedules", "create", "cli", "--on-event", "--skill", "echo", "--tenant", "acme", "--json"
        )
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["tenant"] == "acme"
    with sqlite3.connect(config.coordinator.db_path) as db:
        states = Counter(row[0] for row in db.execute("SELECT state FROM tasks WHERE tenant = 'acme'"))
    assert states == {TaskState.SUCCEEDED.value: 3}
