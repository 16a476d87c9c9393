"""The HTTP gateway's REST API against a real coordinator, a real worker, a real nats-server and
uvicorn on a free loopback port, through real HTTP (httpx): every verb class, the JSON errors,
authentication and role refusals, identity taken from the key and never from the body."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from common import verbs
from common.config import ClawConfig
from gateway.routes import ROUTES
from gateway.server import open_key_store
from tests.gateway_helpers import RunningGateway, read_sse, running_gateway
from tests.helpers import connected_client, eventually, running_coordinator, running_worker
from worker.context import TaskContext
from worker.skills import Skill, SkillRegistry


async def _finished(http: httpx.AsyncClient, task_id: str, state: str = "succeeded") -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        view: dict[str, Any] = (await http.get(f"/v1/tasks/{task_id}")).json()
        return view if view["state"] == state else None

    return await eventually(done, what=f"task {task_id} {state}")


def _concrete(path: str) -> str:
    return path.replace("{task_id}", "01J00000000000000000000000").replace("{node_id}", "n1").replace("{name}", "echo")


async def test_healthz_answers_without_a_key_and_every_other_endpoint_refuses_one(gw: RunningGateway) -> None:
    async with gw.client(None) as anonymous:
        health = await anonymous.get("/healthz")
        assert health.status_code == 200 and health.json() == {"ok": True, "nats": "connected"}
        paths = [(r.method, _concrete(r.path)) for r in ROUTES]
        paths += [
            ("POST", "/v1/verbs/ping"),
            ("GET", "/openapi.json"),
            ("GET", f"{_concrete('/v1/tasks/{task_id}')}/artifacts/x"),
        ]
        for method, path in paths:
            answer = await anonymous.request(method, path, json={} if method == "POST" else None)
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "unauthenticated"
        for header in ({"Authorization": "Bearer ck_0123456789abcdef_" + "x" * 43}, {"Authorization": "Basic abc"},
                       {"X-API-Key": "not-a-key"}):  # fmt: skip
            answer = await anonymous.get("/v1/status", headers=header)
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthenticated", header


async def test_submit_one_and_a_batch_with_idempotency_keys_then_list_filter_and_page(gw: RunningGateway) -> None:
    async with gw.client("sam") as sam:
        one = await sam.post("/v1/tasks", json={"skill": "echo", "input": {"n": 0}}, headers={"Idempotency-Key": "k0"})
        assert one.status_code == 200, one.text
        first = one.json()["results"][0]
        again = await sam.post(
            "/v1/tasks", json={"skill": "echo", "input": {"n": 0}}, headers={"Idempotency-Key": "k0"}
        )
        duplicate = again.json()["results"][0]
        assert duplicate["task_id"] == first["task_id"] and duplicate["duplicate"] is True
        batch = await sam.post(
            "/v1/tasks",
            json={"tasks": [{"skill": "echo", "input": {"n": n}, "idempotency_key": f"b{n}"} for n in range(1, 5)]},
        )
        ids = [r["task_id"] for r in batch.json()["results"]]
        assert len(set(ids)) == 4
        for task_id in [first["task_id"], *ids]:
            view = await _finished(sam, task_id)
        assert view["result"] == {"n": 4}
        page = (await sam.get("/v1/tasks", params={"state": "succeeded", "skill": "echo", "limit": 2})).json()
        assert len(page["tasks"]) == 2 and page["total"] == 5 and page["next_cursor"]
        rest = await sam.get("/v1/tasks", params={"state": "succeeded", "limit": 10, "cursor": page["next_cursor"]})
        assert {t["task_id"] for t in page["tasks"] + rest.json()["tasks"]} == {first["task_id"], *ids}
        assert (await sam.get("/v1/tasks", params={"state": "failed"})).json()["tasks"] == []
        states = (await sam.post("/v1/tasks/states", json={"task_ids": ids[:2]})).json()
        assert states == {"states": dict.fromkeys(ids[:2], "succeeded")}
        acme = await sam.post("/v1/tasks", json={"skill": "echo", "tenant": "acme"})
        acme_id = acme.json()["results"][0]["task_id"]
        listed = (await sam.get("/v1/tasks", params={"tenant": "acme"})).json()
        assert [t["task_id"] for t in listed["tasks"]] == [acme_id] and listed["tasks"][0]["tenant"] == "acme"


def _report_skills() -> SkillRegistry:
    async def report(ctx: TaskContext, input: dict[str, Any]) -> dict[str, str]:
        ref = await ctx.put_artifact("report.md", f"# Report\n{input['body']}\n", "text/markdown")
        return {"sha256": ref.sha256}

    return SkillRegistry([Skill("report.write", report)])


async def test_a_task_shows_its_timeline_attempts_and_artifacts_and_downloads_one(gw_config: ClawConfig) -> None:
    async with (
        running_coordinator(gw_config),
        running_worker(gw_config, skills=_report_skills()),
        running_gateway(gw_config) as gw,
        gw.client("vera") as vera,
        gw.client("sam") as sam,
    ):
        submitted = await sam.post("/v1/tasks", json={"skill": "report.write", "input": {"body": "streamed"}})
        task_id = submitted.json()["results"][0]["task_id"]
        view = await _finished(vera, task_id)
        kinds = [e["kind"] for e in view["events"]]
        assert kinds[:2] == ["submitted", "queued"] and "artifact" in kinds and kinds[-1] == "succeeded"
        assert view["attempt_log"][0]["state"] == "succeeded" and view["attempt_log"][0]["node_id"]
        assert [a["name"] for a in view["artifacts"]] == ["report.md"]
        listed = (await vera.get(f"/v1/tasks/{task_id}/artifacts")).json()
        assert [a["name"] for a in listed["artifacts"]] == ["report.md"] and listed["total"] == 1
        async with vera.stream("GET", f"/v1/tasks/{task_id}/artifacts/report.md") as download:
            assert download.status_code == 200 and download.headers["content-type"].startswith("text/markdown")
            assert b"".join([chunk async for chunk in download.aiter_bytes()]) == b"# Report\nstreamed\n"
        missing = await vera.get(f"/v1/tasks/{task_id}/artifacts/nothing.txt")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        unknown = await vera.get("/v1/tasks/01J00000000000000000000000")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


async def test_cancel_and_retry_and_the_actor_is_the_key_not_the_body(gw: RunningGateway) -> None:
    async with gw.client("sam") as sam, gw.client("otto") as otto:
        task_id = (await sam.post("/v1/tasks", json={"skill": "sleep", "input": {"seconds": 30}})).json()["results"][0][
            "task_id"
        ]
        cancelled = await otto.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "enough", "by": "mallory"})
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
        view = await _finished(otto, task_id, "cancelled")
        cancel_event = next(e for e in view["events"] if e["kind"] == "cancelled")
        assert "mallory" not in str(cancel_event["data"]) and "otto" in str(cancel_event["data"]), cancel_event
        retried = await otto.post(f"/v1/tasks/{task_id}/retry")
        assert retried.status_code == 200 and retried.json()["changed"] is True
        again = await otto.post(f"/v1/tasks/{task_id}/cancel", json={})
        assert again.status_code == 200
        await _finished(otto, task_id, "cancelled")
        refused = await otto.post(f"/v1/tasks/{task_id}/cancel", json={"reason": 5})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_input"
        not_json = await otto.post(f"/v1/tasks/{task_id}/cancel", content=b"{nope")
        assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]["message"]


async def test_approvals_approve_and_reject_with_reason_by_the_approver_only(gw: RunningGateway) -> None:
    async with gw.client("sam") as sam, gw.client("april") as april, gw.client("vera") as vera:
        held = await sam.post("/v1/tasks", json={"tasks": [{"skill": "echo", "input": {"hold": True, "n": n}}
                                                           for n in range(2)]})  # fmt: skip
        first, second = (r["task_id"] for r in held.json()["results"])
        assert {r["state"] for r in held.json()["results"]} == {"waiting_approval"}
        waiting = (await vera.get("/v1/approvals")).json()
        assert {a["task_id"] for a in waiting["approvals"]} == {first, second}
        assert waiting["approvals"][0]["rule"] == "held-echo" and waiting["approvals"][0]["submitter"] == "sam"
        denied = await vera.post(f"/v1/approvals/{first}/approve", json={})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        assert "needs the approver role" in denied.json()["error"]["message"]
        approved = await april.post(f"/v1/approvals/{first}/approve", json={"by": "mallory", "note": "ok"})
        assert approved.status_code == 200 and approved.json()["approved_by"] == ["april"], approved.text
        await _finished(april, first)
        rejected = await april.post(f"/v1/approvals/{second}/reject", json={"reason": "not today"})
        assert rejected.json().get("state") == "rejected", rejected.text
        no_reason = await april.post(f"/v1/approvals/{second}/reject", json={})
        assert no_reason.status_code == 400 and no_reason.json()["error"]["code"] == "invalid_input"


async def test_dead_letters_inspect_replay_and_purge(gw: RunningGateway) -> None:
    async with gw.client("sam") as sam, gw.client("otto") as otto, gw.client("ada") as ada:
        failing = {"skill": "fail", "input": {"message": "boom", "retryable": False}, "max_attempts": 1}
        ids = [
            r["task_id"] for r in (await sam.post("/v1/tasks", json={"tasks": [failing, failing]})).json()["results"]
        ]

        async def dead() -> list[Any]:
            letters = (await otto.get("/v1/dlq", params={"skill": "fail"})).json()["letters"]
            return letters if len(letters) == 2 else []

        letters = await eventually(dead, what="two dead letters")
        assert letters[0]["letter"]["attempts"][0]["message"] == "boom"
        replayed = await otto.post(f"/v1/dlq/{ids[0]}/replay")
        assert replayed.status_code == 200 and replayed.json()["results"][0]["task_id"] == ids[0], replayed.text
        purge_refused = await otto.post("/v1/dlq/purge", json={})
        assert purge_refused.status_code == 403
        purged = await ada.post("/v1/dlq/purge", json={"skill": "fail"})
        assert purged.status_code == 200 and purged.json()["purged"] >= 1


async def test_nodes_drain_pause_resume_skills_and_status_with_alerts(gw: RunningGateway) -> None:
    async with gw.client("otto") as otto, gw.client("ada") as ada, gw.client("vera") as vera:
        nodes = (await vera.get("/v1/nodes")).json()["nodes"]
        node_id = nodes[0]["node_id"]
        for action, control in (("drain", "drained"), ("pause", "paused"), ("resume", "active")):
            answer = await otto.post(f"/v1/nodes/{node_id}/{action}")
            assert answer.status_code == 200 and answer.json()["control"] == control, answer.text
        assert (await vera.post(f"/v1/nodes/{node_id}/drain")).status_code == 403
        missing = await otto.post("/v1/nodes/nobody/drain")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "node_not_found"
        skills = (await vera.get("/v1/skills")).json()["skills"]
        assert "echo" in {s["entry"]["manifest"]["name"] for s in skills}
        one = (await vera.get("/v1/skills/echo")).json()["skills"]
        assert [s["entry"]["manifest"]["name"] for s in one] == ["echo"]
        disabled = await ada.post("/v1/skills/sleep/disable", json={})
        assert disabled.status_code == 200 and disabled.json()["skills"][0]["entry"]["enabled"] is False
        assert (await ada.post("/v1/skills/sleep/enable", json={})).status_code == 200
        assert (await otto.post("/v1/skills/sleep/disable", json={})).status_code == 403
        status = (await vera.get("/v1/status", params={"window_s": 60})).json()["status"]
        assert status["nodes_online"] == 1 and "alerts" in status and status["window"]["window_s"] == 60


async def test_any_verb_by_name_the_openapi_document_and_unknown_routes(gw: RunningGateway) -> None:
    async with gw.client("ada") as ada, gw.client("vera") as vera:
        ping = await vera.post("/v1/verbs/ping")
        assert ping.status_code == 200 and ping.json()["version"]
        # usage's `by` groups columns: it is not an actor field to overwrite with a name.
        usage = await vera.post("/v1/verbs/usage", json={"by": ["skill"]})
        assert usage.status_code == 200, usage.text
        assert (await ada.post("/v1/verbs/audit_verify")).status_code == 403  # an operator's verb
        async with gw.client("otto") as otto:
            audit = await otto.post("/v1/verbs/audit_verify")
            assert audit.status_code == 200 and audit.json()["ok"] is True, audit.text
        unknown = await vera.post("/v1/verbs/nope")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_verb"
        spec = (await vera.get("/openapi.json")).json()
        documented = {op["description"].split("`")[1] for p in spec["paths"].values() for op in p.values()
                      if op.get("description", "").startswith("Verb `")}  # fmt: skip
        routed = {r.verb.name for r in ROUTES}
        assert documented == routed and "/v1/verbs/{verb}" in spec["paths"]
        assert all(v.name in spec["paths"]["/v1/verbs/{verb}"]["post"]["description"] for v in verbs.ALL)
        assert {"SubmitRequest", "TaskView", "ErrorReply"} <= set(spec["components"]["schemas"])
        nowhere = await vera.get("/v1/nowhere")
        assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "not_found"


async def test_each_role_may_call_only_the_verbs_of_its_role(gw: RunningGateway) -> None:
    """A viewer reads but changes nothing; a submitter submits but does not operate; only an admin
    purges or toggles skills, and an admin does not operate (the coordinator's rule: each verb needs
    its own role). Checked for every route, against the verb's declared role."""
    holds = {"ada": {"admin"}, "otto": {"operator"}, "april": {"approver"}, "sam": {"submitter"}, "vera": {"viewer"}}
    for name, roles in holds.items():
        async with gw.client(name) as http:
            for route in ROUTES:
                allowed = route.verb.role.value in roles or route.verb.role.value == "viewer"
                answer = await http.request(route.method, _concrete(route.path), json={} if route.has_body else None)
                if allowed:
                    assert answer.status_code != 403, (name, route.path, answer.text)
                else:
                    assert answer.status_code == 403, (name, route.path, answer.text)
                    assert answer.json()["error"]["code"] == "forbidden"


async def test_a_revoked_key_is_refused_by_the_running_gateway(gw: RunningGateway, gw_config: ClawConfig) -> None:
    async with gw.client("vera") as vera:
        assert (await vera.get("/v1/status")).status_code == 200
        async with connected_client(gw_config) as client:
            assert await (await open_key_store(client.conn, gw_config)).revoke("vera") == 1

        async def refused() -> bool:
            answer = await vera.get("/v1/status")
            return answer.status_code == 401 and answer.json()["error"]["message"] == "unknown or revoked API key"

        await eventually(refused, timeout_s=10, what="the revoked key refused")


# --- live: SSE and WebSocket ------------------------------------------------------------------------


async def test_sse_resumes_from_last_event_id_without_losing_or_repeating_an_event(gw: RunningGateway) -> None:
    """A watcher reads a running task's first events, disconnects, reconnects with the last id it
    saw while the task goes on, and again after the task ended: it has every row of the task's log
    exactly once, in order, and the end."""
    async with gw.client("sam") as sam:
        submitted = await sam.post("/v1/tasks", json={"skill": "sleep", "input": {"seconds": 3}})
        task_id = submitted.json()["results"][0]["task_id"]
        path = f"/v1/tasks/{task_id}/events"
        first = await read_sse(sam, path, stop_after=3)
        assert [m.data["kind"] for m in first][:2] == ["submitted", "queued"] and all(m.id for m in first)
        second = await read_sse(sam, path, last_event_id=first[-1].id, stop_after=2)
        third = await read_sse(sam, path, last_event_id=second[-1].id)
        assert third[-1].event == "end" and third[-1].data == {"task_id": task_id, "state": "succeeded"}
        received = [m for m in first + second + third if m.id is not None]
        log = (await sam.get(f"/v1/tasks/{task_id}")).json()["events"]
        assert [m.id for m in received] == [e["id"] for e in log]  # each once, in order
        assert [m.data for m in received] == log
        assert "progress" in [m.data["kind"] for m in received]
        # Resuming after the end gives nothing more than the end; an id past everything likewise.
        after = await read_sse(sam, path, last_event_id=log[-1]["id"])
        assert [(m.id, m.event) for m in after] == [(None, "end")]
        bad = await sam.get(path, headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"


async def test_sse_refuses_unknown_tasks_and_callers_without_a_key(gw: RunningGateway) -> None:
    async with gw.client("vera") as vera, gw.client(None) as anonymous:
        missing = await vera.get("/v1/tasks/01J00000000000000000000000/events")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert (await anonymous.get("/v1/tasks/01J00000000000000000000000/events")).status_code == 401


async def test_a_websocket_carries_several_subscriptions_a_task_every_task_and_the_overview(
    gw: RunningGateway,
) -> None:
    async with gw.client("sam") as sam:
        submitted = await sam.post("/v1/tasks", json={"skill": "sleep", "input": {"seconds": 2}})
        task_id = submitted.json()["results"][0]["task_id"]
        url = gw.url.replace("http://", "ws://") + "/v1/live"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {gw.keys['vera']}"}) as ws:
            for topic in ("overview", "tasks"):
                await ws.send(json.dumps({"op": "subscribe", "topic": topic}))
            await ws.send(json.dumps({"op": "subscribe", "topic": "task", "task_id": task_id}))
            await ws.send(json.dumps({"op": "subscribe", "topic": "task", "task_id": "01J00000000000000000000000"}))
            got: dict[str, list[Any]] = {"task": [], "tasks": [], "overview": [], "error": []}
            end = None
            async with asyncio.timeout(60):
                while end is None or not got["overview"] or not got["tasks"]:
                    message = json.loads(await ws.recv())
                    got["error" if "error" in message else message["topic"]].append(message)
                    if message.get("topic") == "task" and "end" in message:
                        end = message["end"]
        assert end == "succeeded"
        events = [m["event"] for m in got["task"] if "event" in m]
        log = (await sam.get(f"/v1/tasks/{task_id}")).json()["events"]
        assert [e["id"] for e in events] == [e["id"] for e in log]
        assert got["error"][0]["error"]["code"] == "not_found" and got["error"][0]["task_id"].startswith("01J0")
        assert "nodes_online" in got["overview"][0]["status"]
        assert any(m["feed"]["task_id"] == task_id for m in got["tasks"])
        # Without a key, the socket is closed with the application's 4401.
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            async with websockets.connect(url) as anonymous:
                await anonymous.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_many_sse_watchers_of_one_task_each_get_the_whole_log_once(gw: RunningGateway) -> None:
    async with gw.client("vera") as vera, gw.client("sam") as sam:
        submitted = await sam.post("/v1/tasks", json={"skill": "sleep", "input": {"seconds": 2}})
        task_id = submitted.json()["results"][0]["task_id"]
        streams = await asyncio.gather(*(read_sse(vera, f"/v1/tasks/{task_id}/events") for _ in range(20)))
        log = [e["id"] for e in (await vera.get(f"/v1/tasks/{task_id}")).json()["events"]]
        for messages in streams:
            assert [m.id for m in messages[:-1]] == log and messages[-1].event == "end"


async def test_concurrent_submits_share_requests_but_a_bad_one_fails_alone(gw: RunningGateway) -> None:
    """Submits in flight together leave in shared requests (all or nothing each); a refused batch is
    sent again caller by caller, so only the caller with the bad task gets the error."""
    async with gw.client("sam") as sam:
        bodies = [{"skill": "echo", "input": {"n": n}} for n in range(30)]
        bodies[7] = {"skill": "no.such.skill"}
        answers = await asyncio.gather(*(sam.post("/v1/tasks", json=body) for body in bodies))
        assert [a.status_code for a in answers] == [400 if n == 7 else 200 for n in range(30)]
        assert answers[7].json()["error"]["code"] == "unknown_skill"
        ids = [a.json()["results"][0]["task_id"] for n, a in enumerate(answers) if n != 7]
        assert len(set(ids)) == 29
        for n, task_id in zip([n for n in range(30) if n != 7], ids, strict=True):
            view = await _finished(sam, task_id)
            assert view["result"] == {"n": n}  # each caller got its own task's id
