"""Workflows in a real coordinator and worker (real nats-server, real SQLite): a DAG with a fan-out
and a join runs to the end with each node an ordinary task under the run's trace; conditions skip;
optional failures continue; a failing node fails the run; approval gates hold; cache serves; a
run id given twice is one run; cancel stops a run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from common import api, verbs
from common.config import ClawConfig
from common.errors import WorkflowNotFoundError, WorkflowSpecError
from communication.api_client import ClawClient
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, wait_nodes_online

FINISHED = {"succeeded", "failed", "cancelled"}


async def register(client: ClawClient, spec: dict[str, Any]) -> api.WorkflowRegisterReply:
    return await client.call(verbs.WORKFLOW_REGISTER, api.WorkflowSpecRequest(spec=yaml.safe_dump(spec)))


async def start(client: ClawClient, name: str, input: dict[str, Any] | None = None, **options: Any) -> str:
    raw = msgspec.Raw(json.dumps(input or {}).encode())
    reply = await client.call(verbs.WORKFLOW_RUN, api.WorkflowRunRequest(name=name, input=raw, **options))
    return reply.run_id


async def show(client: ClawClient, run_id: str) -> api.WorkflowRunView:
    return await client.call(verbs.WORKFLOW_SHOW, api.WorkflowRunGetRequest(run_id=run_id))


async def finished(client: ClawClient, run_id: str, timeout_s: float = 60.0) -> api.WorkflowRunView:
    async def done() -> api.WorkflowRunView | None:
        view = await show(client, run_id)
        return view if view.state in FINISHED else None

    return await eventually(done, timeout_s=timeout_s, what=f"run {run_id} to finish")


def nodes_of(view: api.WorkflowRunView) -> dict[str, api.WorkflowNodeView]:
    return {node.name: node for node in view.nodes}


async def task(client: ClawClient, task_id: str) -> Any:
    return await client.call(verbs.TASK_GET, api.TaskGetRequest(task_id=task_id))


FAN = {
    "name": "fan",
    "defaults": {"words": ["a", "b", "c", "d", "e"]},
    "nodes": {
        "split": {"skill": "echo", "input": {"items": "=input.words"}},
        "each": {
            "skill": "echo",
            "for_each": "nodes.split.output.items",
            "concurrency": 2,
            "input": {"word": "=item", "at": "=index"},
        },
        "join": {"skill": "echo", "input": {"all": "=nodes.each.output[*].word", "n": "=length(nodes.each.output)"}},
        "never": {"skill": "echo", "when": "input.flag", "needs": ["join"]},
        "after_never": {"skill": "echo", "needs": ["never"]},
    },
}


async def test_a_dag_with_fan_out_and_join_runs_each_node_as_a_task_under_one_trace(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        reply = await register(client, FAN)
        assert (reply.name, reply.version, reply.unchanged) == ("fan", 1, False)
        again = await register(client, FAN)
        assert (again.version, again.unchanged) == (1, True)
        run_id = await start(client, "fan")
        view = await finished(client, run_id)
        assert view.state == "succeeded", view
        nodes = nodes_of(view)
        assert nodes["each"].items == 5 and len(nodes["each"].task_ids) == 5
        assert nodes["each"].task_states == ["succeeded"] * 5
        assert (nodes["never"].state, nodes["after_never"].state) == ("skipped", "skipped")
        joined = await task(client, nodes["join"].task_ids[0])
        assert json.loads(bytes(joined.result)) == {"all": ["a", "b", "c", "d", "e"], "n": 5}
        item = await task(client, nodes["each"].task_ids[3])
        assert json.loads(bytes(item.input)) == {"word": "d", "at": 3}
        # One trace: every node's task carries the run's trace id.
        ids = [t for n in view.nodes for t in n.task_ids]
        traces = {(await task(client, t)).trace_id for t in ids}
        assert traces == {view.trace_id}
        assert all(n.attempts == 1 for n in view.nodes if n.state == "succeeded" and n.items is None)


async def test_a_failing_node_fails_the_run_and_an_optional_one_does_not(config: ClawConfig) -> None:
    spec = {
        "name": "failing",
        "nodes": {
            "a": {"skill": "echo"},
            "maybe": {"skill": "fail", "input": {"retryable": False}, "optional": True, "needs": ["a"]},
            "b": {"skill": "echo", "input": {"m": "=nodes.maybe.output"}},
            "boom": {"skill": "fail", "input": {"retryable": False}, "needs": ["b"], "retry": {"max_attempts": 1}},
            "after": {"skill": "echo", "needs": ["boom"]},
        },
    }
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        await register(client, spec)
        view = await finished(client, await start(client, "failing"))
        nodes = nodes_of(view)
        assert view.state == "failed" and "node 'boom' failed" in (view.error or "")
        assert nodes["maybe"].state == "failed" and nodes["b"].state == "succeeded"
        assert nodes["after"].state in ("waiting", "skipped")
        assert nodes["boom"].attempts == 1


async def test_an_approval_node_holds_until_approved(config: ClawConfig) -> None:
    spec = {
        "name": "gated",
        "nodes": {
            "a": {"skill": "echo", "input": {"x": 1}},
            "gate": {"approval": True, "input": {"summary": "=nodes.a.output"}},
            "b": {"skill": "echo", "input": {"ok": "=nodes.gate.output.summary.x"}},
        },
    }
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        await register(client, spec)
        run_id = await start(client, "gated")

        async def held() -> api.WorkflowNodeView | None:
            node = nodes_of(await show(client, run_id))["gate"]
            return node if node.waits_for == ["approval"] else None

        gate = await eventually(held, what="the gate held")
        async with connected_client(config, identity="boss") as boss:  # not the run's starter: no self-approval
            await boss.call(verbs.APPROVE, api.ApproveRequest(task_id=gate.task_ids[0]))
        view = await finished(client, run_id)
        assert view.state == "succeeded"
        b = await task(client, nodes_of(view)["b"].task_ids[0])
        assert json.loads(bytes(b.result)) == {"ok": 1}


async def test_cache_serves_a_node_from_an_earlier_success(config: ClawConfig) -> None:
    spec = {"name": "cached", "nodes": {"a": {"skill": "echo", "input": {"k": "=input.k"}, "cache": True}}}
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        await register(client, spec)
        first = nodes_of(await finished(client, await start(client, "cached", {"k": 1})))["a"]
        second = nodes_of(await finished(client, await start(client, "cached", {"k": 1})))["a"]
        third = nodes_of(await finished(client, await start(client, "cached", {"k": 2})))["a"]
        assert (first.source, second.source, third.source) == ("run", "cached", "run")
        assert second.task_ids == first.task_ids and third.task_ids != first.task_ids


async def test_the_same_run_id_twice_is_one_run_and_cancel_stops_a_run(config: ClawConfig) -> None:
    spec = {
        "name": "slow",
        "nodes": {"nap": {"skill": "sleep", "input": {"seconds": 30}}, "b": {"skill": "echo", "needs": ["nap"]}},
    }
    async with (
        running_coordinator(config) as coordinator,
        running_worker(config),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        await register(client, spec)
        one = await coordinator.workflows.start_run("slow", {}, run_id="schedule:slow:2026-12-05T16:30:00Z")
        two = await coordinator.workflows.start_run("slow", {}, run_id="schedule:slow:2026-12-05T16:30:00Z")
        assert one == two == "schedule:slow:2026-12-05T16:30:00Z"
        listed = await client.call(verbs.WORKFLOW_LIST, api.WorkflowListRequest(name="slow"))
        assert [r.run_id for r in listed.runs] == [one]
        await eventually(lambda: _state_is(client, one, "nap", "running"), what="nap running")
        cancelled = await client.call(verbs.WORKFLOW_CANCEL, api.WorkflowCancelRequest(run_id=one, reason="enough"))
        assert cancelled.state == "cancelled"
        nap = nodes_of(cancelled)["nap"]
        assert nap.state == "cancelled"

        async def task_cancelled() -> bool:
            return (await task(client, nap.task_ids[0])).state == "cancelled"

        await eventually(task_cancelled, what="the nap task cancelled")
    db = sqlite3.connect(Path(config.coordinator.db_path))
    kinds = [r[0] for r in db.execute("SELECT kind FROM events WHERE task_id = ? ORDER BY id", (f"run:{one}",))]
    db.close()
    assert kinds[0] == "workflow.run_started" and kinds[-1] == "workflow.run_cancelled"


async def _state_is(client: ClawClient, run_id: str, node: str, state: str) -> bool:
    return nodes_of(await show(client, run_id))[node].state == state


async def test_bad_specs_and_unknown_names_are_refused_with_one_line(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        with pytest.raises(WorkflowSpecError, match=r"^node 'a': unknown skill 'nope'"):
            await register(client, {"name": "bad", "nodes": {"a": {"skill": "nope"}}})
        with pytest.raises(WorkflowNotFoundError, match="no workflow 'never_registered' is registered"):
            await start(client, "never_registered")


async def test_registered_triggers_are_listed_for_the_schedules_feature(config: ClawConfig) -> None:
    async with running_coordinator(config) as coordinator:
        await coordinator.workflows.register("name: manual\nnodes: {a: {skill: echo}}\n")
        await coordinator.workflows.register(
            "name: nightly\ntrigger: {cron: '0 2 * * *', timezone: Europe/Paris, missed: once}\n"
            "nodes: {a: {skill: echo}}\n"
        )
        [(name, version, trigger)] = await coordinator.workflows.triggers()
        assert (name, version, trigger.cron, trigger.timezone, trigger.missed) == (
            "nightly", 1, "0 2 * * *", "Europe/Paris", "once",
        )  # fmt: skip


async def test_a_rejected_gate_fails_the_run_and_a_node_retries_per_its_policy(config: ClawConfig) -> None:
    spec = {
        "name": "policy",
        "nodes": {
            "flaky": {
                "skill": "fail",
                "input": {"retryable": True},
                "retry": {"max_attempts": 2, "base_s": 0.1, "jitter": 0},
                "optional": True,
            },
            "gate": {"approval": True, "needs": ["flaky"], "input": {"what": "=nodes.flaky.state"}},
            "after": {"skill": "echo", "needs": ["gate"]},
        },
    }
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        await register(client, spec)
        run_id = await start(client, "policy")

        async def held() -> api.WorkflowNodeView | None:
            node = nodes_of(await show(client, run_id))["gate"]
            return node if node.waits_for == ["approval"] else None

        gate = await eventually(held, what="the gate held")
        flaky = nodes_of(await show(client, run_id))["flaky"]
        assert flaky.state == "failed" and flaky.attempts == 2  # its retry policy, then optional
        gate_task = await task(client, gate.task_ids[0])
        assert json.loads(bytes(gate_task.input)) == {"what": "failed"}
        await client.call(verbs.REJECT, api.RejectRequest(task_id=gate.task_ids[0], by="boss", reason="not today"))
        view = await finished(client, run_id)
        assert view.state == "failed" and "node 'gate' failed" in (view.error or "")
        assert "rejected" in (nodes_of(view)["gate"].error or "")
        assert nodes_of(view)["after"].state == "skipped"
