"""The gateway's WebSocket resumes a task's events where a client left off (each event once), CORS
answers only the configured origins, and the approval centre shows who already approved a task that
needs two approvers; against a real coordinator, worker, nats-server and uvicorn."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
import websockets

from common.config import ClawConfig
from gateway.settings import GatewaySettings
from tests.gateway_helpers import RunningGateway, gateway_cluster
from tests.helpers import eventually

GUARD_POLICY = """
rules:
  - name: two-keys
    match: {skill: echo, input: {hold: true}}
    action: require_approval
    approvals: 2
  - name: low-risk
    match: {risk: [read_only, write_draft]}
    action: allow
default: require_approval
default_approvals: 1
"""
APP = "https://app.example"


@pytest.fixture
def guard_policy() -> str:
    """`gw`'s coordinator holds echo tasks asking for it until two approvers said yes."""
    return GUARD_POLICY


@pytest.fixture
def gateway_settings() -> GatewaySettings:
    """`gw`'s gateway answers CORS requests of `APP` only."""
    return GatewaySettings(port=0, cors_origins=[APP])


async def _task_messages(ws: Any, task_id: str, *, stop_after: int | None = None) -> list[dict[str, Any]]:
    """The task's messages on `ws` until its end (or `stop_after` events)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(60):
        while True:
            message = json.loads(await ws.recv())
            assert message.get("task_id") == task_id and "error" not in message, message
            got.append(message)
            if "end" in message or (stop_after is not None and len(got) >= stop_after):
                return got


async def test_a_websocket_client_that_reconnects_from_the_last_event_it_saw_gets_every_event_once(
    gw: RunningGateway,
) -> None:
    url = gw.url.replace("http://", "ws://") + "/v1/live"
    headers = {"Authorization": f"Bearer {gw.keys['vera']}"}
    async with gw.client("sam") as sam:
        submitted = await sam.post("/v1/tasks", json={"skill": "sleep", "input": {"seconds": 3}})
        task_id = submitted.json()["results"][0]["task_id"]
        received: list[dict[str, Any]] = []
        after = 0
        for stop_after in (3, 2, None):  # two disconnects while the task runs, then to its end
            async with websockets.connect(url, additional_headers=headers) as ws:
                await ws.send(json.dumps({"op": "subscribe", "topic": "task", "task_id": task_id, "after": after}))
                part = await _task_messages(ws, task_id, stop_after=stop_after)
            received += part
            events = [m["event"] for m in part if "event" in m]
            after = events[-1]["id"] if events else after
        assert received[-1] == {"topic": "task", "task_id": task_id, "end": "succeeded"}
        log = (await sam.get(f"/v1/tasks/{task_id}")).json()["events"]
        events = [m["event"] for m in received if "event" in m]
        assert [e["id"] for e in events] == [e["id"] for e in log]  # each once, in order
        assert events == log and "progress" in [e["kind"] for e in events]


async def test_cors_answers_the_configured_origin_only(gw: RunningGateway) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    async with gw.client("vera") as vera, gw.client(None) as anonymous:
        allowed = await anonymous.options("/v1/tasks", headers={"Origin": APP, **preflight})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == APP
        assert "POST" in allowed.headers["access-control-allow-methods"]
        refused = await anonymous.options("/v1/tasks", headers={"Origin": "https://evil.example", **preflight})
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        read = await vera.get("/v1/status", headers={"Origin": APP})
        assert read.status_code == 200 and read.headers["access-control-allow-origin"] == APP
        other = await vera.get("/v1/status", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        # CORS does not open the API: a preflight is answered, the call still needs a key.
        assert (await anonymous.get("/v1/status", headers={"Origin": APP})).status_code == 401


async def test_cors_is_off_by_default(gw_config: ClawConfig) -> None:
    async with gateway_cluster(gw_config, worker=False) as plain, plain.client("vera") as vera:
        answer = await vera.get("/v1/status", headers={"Origin": APP})
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


async def test_the_approval_centre_shows_who_already_approved_a_task_needing_two(gw: RunningGateway) -> None:
    async with gw.client("sam") as sam, gw.client("april") as april:
        held = await sam.post("/v1/tasks", json={"skill": "echo", "input": {"hold": True}})
        task_id = held.json()["results"][0]["task_id"]
        first = await april.post(f"/v1/approvals/{task_id}/approve", json={"note": "one of two"})
        assert first.status_code == 200 and first.json()["approved_by"] == ["april"], first.text
        waiting = (await april.get("/v1/approvals")).json()["approvals"]
        assert [(a["task_id"], a["approved_by"], a["approvals_needed"]) for a in waiting] == [(task_id, ["april"], 2)]
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        login = await browser.post("/login", data={"key": gw.keys["vera"], "next": "/approvals"})
        assert login.status_code == 303
        page = (await browser.get("/approvals")).text
        card = page[page.index(f'data-task="{task_id}"') :]
        assert "rule <b>two-keys</b>" in card and "<dd>sam</dd>" in card
        assert re.search(r"<dt>Approvals</dt><dd>1 of 2: april</dd>", card)

    async def still_waiting() -> bool:
        async with gw.client("vera") as vera:
            return bool((await vera.get(f"/v1/tasks/{task_id}")).json()["state"] == "waiting_approval")

    assert await eventually(still_waiting, what="the task still waits for its second approver")
