"""Python client parity with the HTTP gateway: every verb a REST route calls has a named `ClawClient`
method, and the methods added for workflows, schedules, limits and usage work against a real
coordinator, worker and nats-server."""

from __future__ import annotations

import json

from common import api, verbs
from common.config import ClawConfig
from common.flow import Limit
from communication.api_client import ClawClient
from gateway.routes import ROUTES
from tests.helpers import connected_client, eventually, running_coordinator, running_worker

# The verb each REST route calls -> the ClawClient method that calls the same verb.
CLIENT_METHOD = {
    "ping": "ping",
    "status": "status",
    "submit": "submit_many",
    "task_list": "tasks_page",
    "task_states": "task_states",
    "task_get": "get_task",
    "task_cancel": "cancel",
    "task_retry": "retry",
    "artifacts": "artifacts_page",
    "approvals": "approvals_page",
    "approve": "approve",
    "reject": "reject",
    "dlq_list": "dlq_page",
    "dlq_replay": "dlq_replay",
    "dlq_purge": "dlq_purge",
    "nodes": "nodes_page",
    "node_control": "node_control",
    "skills": "skills_page",
    "skill_toggle": "set_skill_enabled",
    "guard_check": "guard_check",
    "workflow_list": "workflows",
    "workflow_run": "run_workflow",
    "workflow_show": "workflow_run",
    "workflow_rerun": "rerun_workflow",
    "workflow_cancel": "cancel_run",
    "schedule_list": "schedules",
    "schedule_show": "schedule",
    "schedule_pause": "pause_schedule",
    "schedule_resume": "resume_schedule",
    "schedule_trigger": "trigger_schedule",
    "schedule_event": "schedule_event",
    "limits_list": "limits",
    "usage": "usage",
}


def test_every_verb_of_a_rest_route_has_a_named_client_method() -> None:
    route_verbs = {route.verb.name for route in ROUTES}
    assert route_verbs <= CLIENT_METHOD.keys(), route_verbs - CLIENT_METHOD.keys()
    missing = [name for name in CLIENT_METHOD.values() if not callable(getattr(ClawClient, name, None))]
    assert not missing, missing


async def test_workflows_schedules_limits_and_usage_through_the_clients_named_methods(config: ClawConfig) -> None:
    nodes = {"a": {"skill": "echo", "input": {"k": "=input.k"}}, "b": {"skill": "echo", "needs": ["a"], "input": {}}}
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        registered = await client.register_workflow(json.dumps({"name": "pair", "nodes": nodes}))
        assert (registered.name, registered.version, registered.order) == ("pair", 1, ["a", "b"])
        started = await client.run_workflow("pair", {"k": 1})

        async def finished(run_id: str) -> api.WorkflowRunView | None:
            view = await client.workflow_run(run_id)
            return view if view.state == "succeeded" else None

        await eventually(lambda: finished(started.run_id), what="the run succeeds")
        rerun = await client.rerun_workflow(started.run_id, "b")
        again = await eventually(lambda: finished(rerun.run_id), what="the rerun succeeds")
        assert {n.name: n.source for n in again.nodes} == {"a": "reused", "b": "run"}
        listed = await client.workflows(name="pair")
        assert [w.name for w in listed.workflows] == ["pair"] and len(listed.runs) == 2

        sleeper = {"name": "slow", "nodes": {"s": {"skill": "sleep", "input": {"seconds": 60}}}}
        await client.register_workflow(json.dumps(sleeper))
        slow = await client.run_workflow("slow")
        cancelled = await client.cancel_run(slow.run_id, "not today")
        assert cancelled.state in ("cancelled", "cancelling"), cancelled.state

        await client.create_schedule(api.ScheduleCreateRequest(name="hourly", every_s=3600, skill="echo"))
        assert (await client.pause_schedule("hourly")).paused is True
        shown = await client.schedule("hourly")
        assert shown.schedule.name == "hourly" and shown.schedule.paused is True
        assert (await client.resume_schedule("hourly")).paused is False

        await client.call(verbs.LIMITS_SET, api.LimitsSetRequest(limit=Limit(key="llm:m", requests=40)))
        assert [(view.key, view.limit.requests if view.limit else None) for view in await client.limits()] == [
            ("llm:m", 40)
        ]
        usage = await client.usage(by=["skill"], since_s=3600)
        assert {row.skill for row in usage.rows} >= {"echo"} and all(row.tenant == "" for row in usage.rows)
