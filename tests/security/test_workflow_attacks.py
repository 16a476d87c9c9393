"""Workflows attacked from the bus, as a client with the submit right would: pre-submitting a task
under a node's future task id (to pass its result off as the node's output), a fan-out over an
attacker-sized list, expressions that try to reach beyond the run's data, and run ids made to
break out of their column or a log line."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
import yaml

from common import api, verbs
from common.config import ClawConfig
from common.errors import InvalidInputError, WorkflowSpecError
from coordinator.workflows.runs import node_task_id
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online


async def _finished(client: Any, run_id: str) -> api.WorkflowRunView:
    async def done() -> api.WorkflowRunView | None:
        view = await client.call(verbs.WORKFLOW_SHOW, api.WorkflowRunGetRequest(run_id=run_id))
        return view if view.state != "running" else None

    return await eventually(done, timeout_s=60, what="the run to end")


async def test_a_task_submitted_first_under_a_guessed_node_task_id_does_not_become_the_nodes_output(
    config: ClawConfig,
) -> None:
    flow = {
        "name": "victim",
        "nodes": {
            "slow": {"skill": "sleep", "input": {"seconds": 1}},
            "target": {"skill": "echo", "input": {"real": True, "after": "=nodes.slow.state"}},
        },
    }
    async with (
        running_coordinator(config) as coordinator,
        running_worker(config),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        await coordinator.workflows.register(yaml.safe_dump(flow))
        run_id = await coordinator.workflows.start_run("victim", {})
        view = await client.call(verbs.WORKFLOW_SHOW, api.WorkflowRunGetRequest(run_id=run_id))
        # Everything public about the run, combined every way the id could be derived from it.
        guesses = {
            node_task_id(run_id, salt, view.created_at, "target", None)
            for salt in ("", view.trace_id or "", run_id, view.name)
        }
        forged = await client.submit_many(
            [spec("echo", {"real": False, "forged": True}, task_id=guess) for guess in sorted(guesses)]
        )
        assert all(not r.duplicate for r in forged)
        ended = await _finished(client, run_id)
        assert ended.state == "succeeded"
        [target] = [n for n in ended.nodes if n.name == "target"]
        assert set(target.task_ids).isdisjoint(guesses)
        task = await client.call(verbs.TASK_GET, api.TaskGetRequest(task_id=target.task_ids[0]))
        assert json.loads(bytes(task.result)) == {"real": True, "after": "succeeded"}


async def test_a_fan_out_over_an_attacker_sized_list_fails_its_node_without_making_tasks(config: ClawConfig) -> None:
    flow = {"name": "fan", "nodes": {"each": {"skill": "echo", "for_each": "input.items", "input": {"i": "=item"}}}}
    async with running_coordinator(config) as coordinator, connected_client(config) as client:
        await coordinator.workflows.register(yaml.safe_dump(flow))
        run_id = await coordinator.workflows.start_run("fan", {"items": list(range(10_001))})
        ended = await _finished(client, run_id)
        assert ended.state == "failed" and "10001 items, over the limit of 10000" in (ended.error or "")
        listed = await client.call(verbs.TASK_LIST, api.TaskListRequest(limit=10))
        assert listed.tasks == []


@pytest.mark.parametrize(
    "expression",
    ["=__import__('os').system('id')", "=open('/etc/passwd')", "={{7*7}}", "=nodes.a.output; rm -rf /"],
)
async def test_expressions_cannot_run_code_they_are_refused_at_register(config: ClawConfig, expression: str) -> None:
    flow = {"name": "x", "nodes": {"a": {"skill": "echo"}, "b": {"skill": "echo", "input": {"v": expression}}}}
    async with running_coordinator(config), connected_client(config) as client:
        with pytest.raises(WorkflowSpecError, match=r"^node 'b': input.v: bad expression"):
            await client.call(verbs.WORKFLOW_REGISTER, api.WorkflowSpecRequest(spec=yaml.safe_dump(flow)))


async def test_an_expression_reads_only_the_runs_own_data(config: ClawConfig) -> None:
    """`@` (the whole scope) is the run's input and its upstream outputs - nothing of the process."""
    flow = {"name": "scope", "nodes": {"a": {"skill": "echo", "input": {"k": 1}}, "b": {"skill": "echo",
            "needs": ["a"], "input": {"all": "=@"}}}}  # fmt: skip
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        await client.call(verbs.WORKFLOW_REGISTER, api.WorkflowSpecRequest(spec=yaml.safe_dump(flow)))
        raw = msgspec.Raw(b'{"secret": "mine"}')
        reply = await client.call(verbs.WORKFLOW_RUN, api.WorkflowRunRequest(name="scope", input=raw))
        ended = await _finished(client, reply.run_id)
        [b] = [n for n in ended.nodes if n.name == "b"]
        task = await client.call(verbs.TASK_GET, api.TaskGetRequest(task_id=b.task_ids[0]))
        assert json.loads(bytes(task.result)) == {
            "all": {"input": {"secret": "mine"}, "nodes": {"a": {"output": {"k": 1}, "state": "succeeded"}}}
        }


@pytest.mark.parametrize("run_id", ["x'); DROP TABLE tasks; --", "a\nb", "", "r" * 201, "../../etc"])
async def test_run_ids_outside_the_allowed_characters_are_refused(config: ClawConfig, run_id: str) -> None:
    async with running_coordinator(config) as coordinator, connected_client(config) as client:
        await coordinator.workflows.register("name: one\nnodes: {a: {skill: echo}}\n")
        with pytest.raises(InvalidInputError, match="is not valid"):
            await client.call(verbs.WORKFLOW_RUN, api.WorkflowRunRequest(name="one", run_id=run_id))
