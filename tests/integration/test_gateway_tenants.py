"""Tenant isolation through the HTTP gateway, against a real coordinator, worker, nats-server and
uvicorn: a tenant's API key (`claw gateway key create --tenant acme`) submits for its tenant only,
and sees and touches only its tenant's tasks: by list, by id, by SSE, over the WebSocket, in the
approval and dead-letter lists and in usage. Another tenant's task answers exactly like a task that
does not exist. A key without a tenant (the operators') sees every tenant."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from common.config import ClawConfig
from common.verbs import Role
from tests.gateway_helpers import RunningGateway, create_keys, read_sse
from tests.helpers import eventually

EVERY_ROLE = (Role.SUBMITTER, Role.OPERATOR, Role.APPROVER, Role.VIEWER)
UNKNOWN = "01J00000000000000000000000"


@pytest.fixture
async def gw(gw: RunningGateway, gw_config: ClawConfig) -> RunningGateway:
    """The shared gateway, with keys of every role for two tenants too."""
    tenants = {"acme-app": "acme", "acme-lead": "acme", "globex-app": "globex"}
    gw.keys.update(await create_keys(gw_config, dict.fromkeys(tenants, EVERY_ROLE), tenants))
    return gw


async def _submit(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    answer = await http.post("/v1/tasks", json=body)
    assert answer.status_code == 200, answer.text
    task_id: str = answer.json()["results"][0]["task_id"]
    return task_id


async def _state(http: httpx.AsyncClient, task_id: str, state: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        view: dict[str, Any] = (await http.get(f"/v1/tasks/{task_id}")).json()
        return view if view.get("state") == state else None

    return await eventually(reached, what=f"task {task_id} {state}")


async def test_a_tenants_key_submits_for_its_tenant_and_sees_only_its_tasks_by_list_id_and_sse(
    gw: RunningGateway,
) -> None:
    async with gw.client("acme-app") as acme, gw.client("globex-app") as globex, gw.client("otto") as otto:
        mine = await _submit(acme, {"skill": "echo", "input": {"who": "acme"}})
        theirs = await _submit(globex, {"skill": "echo", "input": {"who": "globex"}})
        claimed = await acme.post("/v1/tasks", json={"skill": "echo", "input": {}, "tenant": "globex"})
        assert claimed.status_code == 400 and "is not yours" in claimed.json()["error"]["message"]
        assert (await _state(acme, mine, "succeeded"))["tenant"] == "acme"
        assert (await _state(globex, theirs, "succeeded"))["tenant"] == "globex"

        # By list: only acme's tasks, whatever the filter says.
        listed = (await acme.get("/v1/tasks")).json()
        assert [t["task_id"] for t in listed["tasks"]] == [mine] and listed["total"] == 1
        other = await acme.get("/v1/tasks", params={"tenant": "globex"})
        assert other.status_code == 400 and other.json()["error"]["code"] == "invalid_input"
        states = (await acme.post("/v1/tasks/states", json={"task_ids": [mine, theirs]})).json()
        assert states == {"states": {mine: "succeeded"}}

        # By id: globex's task is exactly as unknown as an id nobody used.
        unknown = await acme.get(f"/v1/tasks/{UNKNOWN}")
        hidden = await acme.get(f"/v1/tasks/{theirs}")
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.json()["error"]["message"] == unknown.json()["error"]["message"].replace(UNKNOWN, theirs)
        for method, path in (
            ("POST", f"/v1/tasks/{theirs}/cancel"),
            ("POST", f"/v1/tasks/{theirs}/retry"),
            ("GET", f"/v1/tasks/{theirs}/artifacts"),
            ("GET", f"/v1/tasks/{theirs}/artifacts/report.md"),
            ("POST", f"/v1/approvals/{theirs}/approve"),
            ("POST", f"/v1/approvals/{theirs}/reject"),
            ("POST", f"/v1/dlq/{theirs}/replay"),
            ("POST", "/v1/verbs/task_get"),
        ):
            body = {"task_id": theirs, "reason": "x"} if method == "POST" else None
            answer = await acme.request(method, path, json=body)
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", (path, answer.text)

        # By SSE: globex's events are refused; acme's own stream to its end.
        refused = await acme.get(f"/v1/tasks/{theirs}/events")
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
        own = await read_sse(acme, f"/v1/tasks/{mine}/events")
        assert own[0].data["kind"] == "submitted" and own[-1].data == {"task_id": mine, "state": "succeeded"}

        # A key without a tenant sees both.
        everyone = {t["task_id"] for t in (await otto.get("/v1/tasks")).json()["tasks"]}
        assert {mine, theirs} <= everyone
        assert (await otto.get(f"/v1/tasks/{theirs}")).status_code == 200


async def test_a_tenants_key_sees_only_its_held_and_dead_tasks_and_usage_and_no_cluster_wide_changes(
    gw: RunningGateway,
) -> None:
    async with gw.client("acme-app") as acme, gw.client("globex-app") as globex, gw.client("otto") as otto:
        held_mine = await _submit(acme, {"skill": "echo", "input": {"hold": True}})
        held_theirs = await _submit(globex, {"skill": "echo", "input": {"hold": True}})
        dead_mine = await _submit(acme, {"skill": "fail", "input": {"message": "acme"}, "max_attempts": 1})
        dead_theirs = await _submit(globex, {"skill": "fail", "input": {"message": "globex"}, "max_attempts": 1})
        await _state(acme, dead_mine, "dead")
        await _state(globex, dead_theirs, "dead")

        waiting = (await acme.get("/v1/approvals")).json()
        assert [a["task_id"] for a in waiting["approvals"]] == [held_mine] and waiting["total"] == 1
        all_waiting = {a["task_id"] for a in (await otto.get("/v1/approvals")).json()["approvals"]}
        assert {held_mine, held_theirs} <= all_waiting
        letters = (await acme.get("/v1/dlq")).json()["letters"]
        assert [v["letter"]["task_id"] for v in letters] == [dead_mine]
        # Replaying "all" would reach globex's letters: refused; its own one by id is replayed.
        every = await acme.post("/v1/dlq/replay", json={"all": True})
        assert every.status_code == 403 and every.json()["error"]["code"] == "forbidden"
        assert (await acme.post(f"/v1/dlq/{dead_mine}/replay", json={})).status_code == 200
        async with gw.client("acme-lead") as lead:  # another person of acme (nobody approves their own)
            assert (await lead.post(f"/v1/approvals/{held_theirs}/approve", json={})).status_code == 404
            assert (await lead.post(f"/v1/approvals/{held_mine}/approve", json={})).status_code == 200
        await _state(acme, held_mine, "succeeded")

        usage = (await acme.get("/v1/usage", params={"by": "skill"})).json()["rows"]
        assert usage and {row["tenant"] for row in usage} == {"acme"}

        # Verbs beyond one tenant's tasks are refused; cluster-wide reads naming no task are open.
        for method, path in (
            ("GET", "/v1/workflows"),
            ("GET", "/v1/schedules"),
            ("POST", "/v1/nodes/w1/drain"),
            ("POST", "/v1/runs/r1/cancel"),
            ("POST", "/v1/verbs/audit_verify"),
        ):
            answer = await acme.request(method, path, json={} if method == "POST" else None)
            assert answer.status_code == 403 and "tenant 'acme'" in answer.json()["error"]["message"], path
        for path in ("/v1/status", "/v1/nodes", "/v1/skills", "/v1/limits"):
            assert (await acme.get(path)).status_code == 200, path


async def test_a_tenants_websocket_gets_only_its_tasks_feed_and_cannot_watch_anothers_task(
    gw: RunningGateway,
) -> None:
    url = gw.url.replace("http://", "ws://") + "/v1/live"
    headers = {"Authorization": f"Bearer {gw.keys['acme-app']}"}
    async with gw.client("acme-app") as acme, gw.client("globex-app") as globex:
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"op": "subscribe", "topic": "tasks"}))
            feeds: list[str] = []
            errors: list[dict[str, Any]] = []

            async def until_succeeded(task_id: str) -> None:
                async with asyncio.timeout(60):
                    while True:
                        message = json.loads(await ws.recv())
                        if "error" in message:
                            errors.append(message)
                            continue
                        assert message["topic"] == "tasks", message
                        feeds.append(message["feed"]["task_id"])
                        if message["feed"]["task_id"] == task_id and message["feed"].get("state") == "succeeded":
                            return

            first = await _submit(acme, {"skill": "echo", "input": {"n": 1}})
            await until_succeeded(first)  # the subscription is live
            theirs = await _submit(globex, {"skill": "echo", "input": {"who": "globex"}})
            await ws.send(json.dumps({"op": "subscribe", "topic": "task", "task_id": theirs}))
            await _state(globex, theirs, "succeeded")
            # The feed is in commit order: globex's rows, had they been sent, come before these.
            mine = await _submit(acme, {"skill": "echo", "input": {"n": 2}})
            await until_succeeded(mine)
        assert set(feeds) == {first, mine}
        assert [(e["error"]["code"], e["task_id"]) for e in errors] == [("not_found", theirs)]
        await _state(acme, mine, "succeeded")
