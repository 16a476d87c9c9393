"""The HTTP gateway attacked as a caller would: forged or stale sessions, a key used past its
revocation, role checks bypassed through the any-verb route, identity claimed in a body, oversize
bodies, path tricks on artifact downloads. Against a real coordinator, worker, nats-server and
uvicorn (the CSRF, redirect and cross-site WebSocket tries are in tests/integration/test_gateway_dashboard.py)."""

from __future__ import annotations

import re

import httpx
import pytest

from common import verbs
from common.clock import SYSTEM_CLOCK
from common.config import AuthSettings, ClawConfig
from common.errors import PermissionDeniedError
from common.verbs import Role
from coordinator.authorization import Authorizer
from gateway.server import open_key_store
from gateway.sessions import SessionSigner
from tests.gateway_helpers import RunningGateway
from tests.helpers import connected_client, eventually


async def _session(gw: RunningGateway, name: str) -> tuple[httpx.AsyncClient, str]:
    browser = httpx.AsyncClient(base_url=gw.url)
    await browser.post("/login", data={"key": gw.keys[name]})
    page = await browser.get("/tasks")
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert match is not None
    return browser, match.group(1)


async def test_a_session_cookie_signed_with_another_secret_or_edited_is_refused(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as attacker:
        # A cookie holding a made-up admin key, sealed with a secret the attacker made up.
        guessed = "ck_" + gw.keys["ada"].split("_")[1] + "_" + "x" * 43
        forged, _ = SessionSigner(b"guess", ttl_s=3600).issue(guessed)
        attacker.cookies.set("claw_session", forged)
        answer = await attacker.get("/v1/status")
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthenticated"
    browser, _ = await _session(gw, "vera")
    try:
        cookie = browser.cookies["claw_session"]
        # The key is inside, sealed: the browser never holds it in clear.
        assert gw.keys["vera"] not in cookie and gw.keys["vera"][20:] not in cookie
        middle = len(cookie) // 2
        edited = cookie[:middle] + ("A" if cookie[middle] != "A" else "B") + cookie[middle + 1 :]
        async with httpx.AsyncClient(base_url=gw.url) as replay:
            replay.cookies.set("claw_session", edited)
            assert (await replay.get("/v1/status")).status_code == 401
            replay.cookies.set("claw_session", cookie)
            assert (await replay.get("/v1/status")).status_code == 200  # the unedited one works
    finally:
        await browser.aclose()


async def test_a_revoked_key_ends_its_sessions_too(gw: RunningGateway, gw_config: ClawConfig) -> None:
    browser, _ = await _session(gw, "otto")
    try:
        assert (await browser.get("/v1/status")).status_code == 200
        async with connected_client(gw_config) as client:
            await (await open_key_store(client.conn, gw_config)).revoke("otto")

        async def refused() -> bool:
            return (await browser.get("/v1/status")).status_code == 401

        await eventually(refused, timeout_s=10, what="the session of a revoked key refused")
        page = await browser.get("/tasks")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
    finally:
        await browser.aclose()


async def test_a_key_id_with_a_guessed_secret_is_refused_while_the_real_key_is_cached(gw: RunningGateway) -> None:
    """The gateway remembers each credential's answer for the cache window (by the whole credential,
    communication/http_credentials.py): an attacker who knows a key's id, sending it with another
    secret right after its holder, is still refused."""
    real = gw.keys["ada"]
    key_id = real.split("_")[1]
    guessed = f"ck_{key_id}_{'A' * 43}"
    async with httpx.AsyncClient(base_url=gw.url) as http:
        for _ in range(3):
            assert (await http.get("/v1/status", headers={"Authorization": f"Bearer {real}"})).status_code == 200
            answer = await http.get("/v1/status", headers={"Authorization": f"Bearer {guessed}"})
            assert answer.status_code == 401 and answer.json()["error"]["message"] == "unknown or revoked API key"


async def test_the_any_verb_route_checks_the_same_roles(gw: RunningGateway) -> None:
    async with gw.client("vera") as vera:
        for verb in verbs.ALL:
            if verb.role is verbs.Role.VIEWER:
                continue
            answer = await vera.post(f"/v1/verbs/{verb.name}", json={})
            assert answer.status_code == 403, (verb.name, answer.text)


async def test_nobody_acts_in_another_name(gw: RunningGateway) -> None:
    """`by` and `submitter` in a body, or a query string, are overwritten with the key's name."""
    async with gw.client("sam") as sam, gw.client("otto") as otto:
        answer = await sam.post("/v1/tasks?submitter=otto", json={"tasks": [{"skill": "echo"}], "submitter": "otto"})
        task_id = answer.json()["results"][0]["task_id"]
        view = (await otto.get(f"/v1/tasks/{task_id}")).json()
        assert view["events"][0]["data"]["submitter"] == "sam"
        cancelled = await otto.post(f"/v1/tasks/{task_id}/cancel?by=mallory", json={"by": "mallory", "reason": "x"})
        if cancelled.status_code == 200:  # (it may have finished already)
            view = (await otto.get(f"/v1/tasks/{task_id}")).json()
            cancel = next(e for e in view["events"] if e["kind"] == "cancelled")
            assert cancel["data"]["by"] == "otto"


async def test_only_a_listed_gateway_may_act_for_someone_and_only_within_its_own_roles() -> None:
    """On an authenticated bus the coordinator takes a request acting for someone only from the
    identities in `auth.gateways`, and grants at most the gateway's own roles of those the person's
    verified credential holds (the credential itself: tests/security/test_acting_proof_attacks.py)."""
    settings = AuthSettings(roles={"gw": ["submitter", "viewer"], "mallory": ["viewer"]}, gateways=["gw"])
    authorizer = Authorizer(settings, SYSTEM_CLOCK, open_bus=False)
    with pytest.raises(PermissionDeniedError, match="mallory may not act for others"):
        authorizer.check_gateway("mallory", "alice", verbs.APPROVE)
    authorizer.check_gateway("gw", "alice", verbs.APPROVE)
    await authorizer.check_acting("gw", "alice", frozenset({Role.SUBMITTER, Role.VIEWER}), verbs.SUBMIT)
    with pytest.raises(PermissionDeniedError, match="approve needs the approver role; alice holds submitter"):
        await authorizer.check_acting("gw", "alice", frozenset({Role.SUBMITTER, Role.APPROVER}), verbs.APPROVE)


async def test_oversize_bodies_and_path_tricks_are_refused_cleanly(gw: RunningGateway) -> None:
    async with gw.client("sam") as sam:
        huge = await sam.post("/v1/tasks", content=b'{"skill": "echo", "input": "' + b"x" * (17 << 20) + b'"}')
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "payload_too_large"
        for name in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e", "x%00y"):
            answer = await sam.get(f"/v1/tasks/01J00000000000000000000000/artifacts/{name}")
            assert answer.status_code in (404, 400), (name, answer.status_code)
            assert "root:" not in answer.text
        nested = await sam.post("/v1/tasks", content=b"[" * 100_000 + b"]" * 100_000)
        assert nested.status_code == 400 and nested.json()["error"]["code"] == "invalid_input"


def test_every_request_field_naming_an_actor_is_overwritten() -> None:
    """The fields that name who acts, found by type, as the gateway and the coordinator stamp them:
    `registered_by` too; `usage`'s `by` (columns to group by) is not one."""
    from common import api
    from coordinator.api_server import actor_fields
    from gateway.routes import identity_fields

    for verb in verbs.ALL:
        assert identity_fields(verb.request) == actor_fields(verb.request), verb.name
    assert identity_fields(api.WorkflowSpecRequest) == ("registered_by",)
    assert identity_fields(api.UsageRequest) == ()
    assert identity_fields(api.ApproveRequest) == ("by",)
