"""The dashboard's pages and session over real HTTP (the browser flows are in tests/e2e/test_dashboard.py):
the login sets a signed HttpOnly SameSite=Strict cookie, every page renders for a viewer with its
security headers, a change needs the session's CSRF token, a login never redirects off-site, and a
cross-site WebSocket cannot ride the cookie."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
import websockets

from tests.gateway_helpers import RunningGateway
from tests.helpers import eventually

PAGES = (
    "/",
    "/tasks",
    "/tasks?state=queued&skill=echo&tenant=acme",
    "/approvals",
    "/dlq",
    "/nodes",
    "/skills",
    "/docs",
)


async def _logged_in(gw: RunningGateway, name: str, http: httpx.AsyncClient) -> str:
    """Log `name` in on `http`; returns the CSRF token of the session."""
    answer = await http.post("/login", data={"key": gw.keys[name], "next": "/tasks"})
    assert answer.status_code == 303 and answer.headers["location"] == "/tasks"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "claw_session=" in cookie
    page = await http.get("/tasks")
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert match is not None
    return match.group(1)


async def test_pages_need_a_login_then_render_with_security_headers_and_role_aware_actions(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        first = await browser.get("/tasks?state=queued")
        assert first.status_code == 303 and first.headers["location"] == "/login?next=/tasks%3Fstate%3Dqueued"
        wrong = await browser.post("/login", data={"key": "ck_nope", "next": "/"})
        assert wrong.status_code == 401 and "that is not an API key" in wrong.text
        await _logged_in(gw, "vera", browser)
        for path in PAGES:
            page = await browser.get(path)
            assert page.status_code == 200, (path, page.text[:500])
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert page.headers["x-frame-options"] == "DENY"
            assert "vera" in page.text
        tasks = (await browser.get("/tasks")).text
        assert 'id="submit-form"' not in tasks and "Cancel selected" not in tasks  # a viewer's list
        missing = await browser.get("/tasks/01J00000000000000000000000")
        assert missing.status_code == 404 and "Not found" in missing.text
        assert (await browser.get("/static/app.js")).status_code == 200
    async with httpx.AsyncClient(base_url=gw.url) as operator:
        await _logged_in(gw, "otto", operator)
        assert "Cancel selected" in (await operator.get("/tasks")).text


async def test_a_session_changes_nothing_without_its_csrf_token(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        csrf = await _logged_in(gw, "sam", browser)
        body = {"skill": "echo", "input": {"from": "the form"}}
        forged = await browser.post("/v1/tasks", json=body)
        assert forged.status_code == 403 and "CSRF" in forged.json()["error"]["message"]
        wrong = await browser.post("/v1/tasks", json=body, headers={"X-CSRF-Token": "guess"})
        assert wrong.status_code == 403
        sent = await browser.post("/v1/tasks", json=body, headers={"X-CSRF-Token": csrf})
        assert sent.status_code == 200 and sent.json()["results"][0]["state"] in ("pending", "queued")
        assert (await browser.get("/v1/status")).status_code == 200  # reads need no token
        assert (await browser.post("/logout", data={})).status_code == 403
        out = await browser.post("/logout", data={"csrf": csrf})
        assert out.status_code == 303 and 'claw_session=""' in out.headers["set-cookie"]


async def test_a_login_never_redirects_to_another_site(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
            answer = await browser.post("/login", data={"key": gw.keys["vera"], "next": target})
            assert answer.status_code == 303 and answer.headers["location"] == "/", target


async def test_a_cross_site_websocket_cannot_use_the_session_cookie(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        await _logged_in(gw, "vera", browser)
        cookie = f"claw_session={browser.cookies['claw_session']}"
    url = gw.url.replace("http://", "ws://") + "/v1/live"
    host = gw.url.split("://")[1]
    async with websockets.connect(url, additional_headers={"Cookie": cookie}, origin=f"http://{host}") as same:
        await same.send('{"op": "subscribe", "topic": "overview"}')
        assert "overview" in await same.recv()
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        async with websockets.connect(url, additional_headers={"Cookie": cookie}, origin="http://evil.example") as ws:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_workflows_runs_schedules_and_limits_over_rest_and_their_pages(gw: RunningGateway) -> None:
    """A workflow registered, run, drawn as its graph and rerun from a node through the gateway;
    the schedules and limits pages render (empty states too)."""
    b = {"skill": "echo", "needs": ["a"], "input": {"a": "=nodes.a"}}
    spec = json.dumps({"name": "pair", "nodes": {"a": {"skill": "echo", "input": {"k": "=input.k"}}, "b": b}})
    async with gw.client("otto") as otto, gw.client("sam") as sam, gw.client("vera") as vera:
        registered = await otto.post("/v1/verbs/workflow_register", json={"spec": spec})
        assert registered.status_code == 200, registered.text
        assert (await vera.post("/v1/workflows/pair/runs", json={"input": {"k": 1}})).status_code == 403
        started = await sam.post("/v1/workflows/pair/runs", json={"input": {"k": 1}})
        assert started.status_code == 200, started.text
        run_id = started.json()["run_id"]

        async def finished(run: str) -> dict[str, Any] | None:
            view: dict[str, Any] = (await vera.get(f"/v1/runs/{run}")).json()
            return view if view["state"] == "succeeded" else None

        view = await eventually(lambda: finished(run_id), what="the run succeeds")
        assert [n["name"] for n in view["nodes"]] == ["a", "b"]
        rerun = await sam.post(f"/v1/runs/{run_id}/rerun", json={"from_node": "b"})
        assert rerun.status_code == 200, rerun.text
        again = await eventually(lambda: finished(rerun.json()["run_id"]), what="the rerun succeeds")
        assert {n["name"]: n["source"] for n in again["nodes"]} == {"a": "reused", "b": "run"}
        listed = (await vera.get("/v1/workflows")).json()
        assert [w["name"] for w in listed["workflows"]] == ["pair"] and len(listed["runs"]) == 2
        assert (await vera.get("/v1/schedules")).json() == {"schedules": []}
        assert (await vera.get("/v1/limits")).status_code == 200
        usage = await vera.get("/v1/usage", params={"by": "tenant,skill"})
        assert usage.status_code == 200, usage.text
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        await _logged_in(gw, "sam", browser)
        page = await browser.get(f"/runs/{run_id}")
        assert page.status_code == 200 and 'data-node="a"' in page.text and 'data-node="b"' in page.text
        assert "Rerun from here" in page.text  # a submitter may rerun
        for path, text in (("/workflows", "pair"), ("/schedules", "No schedule"), ("/limits", "No rate limit")):
            answer = await browser.get(path)
            assert answer.status_code == 200 and text in answer.text, path


async def test_the_schedules_page_shows_each_rule_once_in_its_own_words(gw: RunningGateway) -> None:
    """The rule column reads as `claw schedules list` does: "on subject material.>", never
    "subject on subject material.>" (nor "artifact on new artifact ...")."""
    rules = {"tick": {"every_s": 600.0}, "inbox": {"on_subject": "material.>"}, "reports": {"on_artifact": "reports/"}}
    async with gw.client("otto") as otto:
        for name, rule in rules.items():
            body = {"name": name, "skill": "echo", **rule}
            created = await otto.post("/v1/verbs/schedule_create", json=body)
            assert created.status_code == 200, created.text
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        await _logged_in(gw, "otto", browser)
        page = (await browser.get("/schedules")).text
    cells = re.findall(r'<td class="mono small">([^<]*)</td>', page)
    assert sorted(cells) == ["every 10m", "on new artifact reports/*", "on subject material.&gt;"]


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def test_an_unknown_path_is_the_not_found_page_in_a_browser_and_json_for_api_clients(gw: RunningGateway) -> None:
    """A person who opens /api in a browser sees the dashboard's "Not found" page, not raw JSON;
    /v1/... and a client asking for JSON keep the API's error body."""
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        stranger = await browser.get("/api", headers={"Accept": BROWSER_ACCEPT})
        assert stranger.status_code == 404 and stranger.headers["content-type"].startswith("text/html")
        assert "<h1>Not found</h1>" in stranger.text and "Log out" not in stranger.text
        script = await browser.get("/<script>alert(1)</script>", headers={"Accept": BROWSER_ACCEPT})
        assert script.status_code == 404 and "<script>alert" not in script.text  # the path is escaped
        await _logged_in(gw, "vera", browser)
        page = await browser.get("/api", headers={"Accept": BROWSER_ACCEPT})
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html"), page.text[:300]
        assert "<h1>Not found</h1>" in page.text and "no page at /api" in page.text
        assert "vera" in page.text and 'href="/tasks"' in page.text  # the navigation, as on every page
        assert page.headers["x-frame-options"] == "DENY"
        for path, accept in (("/v1/nope", BROWSER_ACCEPT), ("/api", "application/json"), ("/api", "*/*")):
            api = await browser.get(path, headers={"Accept": accept})
            assert api.status_code == 404 and api.json()["error"]["code"] == "not_found", (path, accept)
