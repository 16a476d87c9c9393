"""A tenant's API key attacking the other tenants through the HTTP gateway: every verb, also one
added later, is refused by default unless the tenant rules know it; a body or a query naming another
tenant, another tenant's idempotency key, the states of another tenant's ids and the dashboard's
filter get nothing of theirs. Against a real coordinator, worker, nats-server and uvicorn."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import httpx
import msgspec
import pytest

from common import verbs
from common.config import ClawConfig
from common.errors import PermissionDeniedError
from common.verbs import Role
from communication.api_client import ActingFor
from gateway.tenancy import ONE_TASK_VERBS, OPEN_VERBS, TenantScope
from tests.gateway_helpers import RunningGateway, create_keys
from tests.helpers import eventually

# The verbs the tenant rules let through, each with its own rule (gateway/tenancy.py).
RULED = {"submit", "task_list", "dlq_replay", "usage", "approvals", "dlq_list", "task_states"}


class _NoClient:
    """A client that must not be called: a refusal comes before any request leaves."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the tenant rules called the coordinator ({name}) for a verb they refuse")


async def test_every_verb_not_ruled_for_tenants_is_refused_before_any_request() -> None:
    scope = TenantScope(_NoClient())  # type: ignore[arg-type]
    acting = ActingFor("shop")
    refused = []
    for name, verb in verbs.BY_NAME.items():
        if name in OPEN_VERBS or name in ONE_TASK_VERBS or name in RULED:
            continue
        request = msgspec.convert({}, verb.request) if _empty_ok(verb.request) else None
        with pytest.raises(PermissionDeniedError, match="a key of tenant 'acme' may not call"):
            await scope.before("acme", acting, verb, request)
        refused.append(name)
    # The cluster-wide changes are among them (a new verb lands here until a rule lets it out).
    assert {"node_control", "dlq_purge", "skill_toggle", "workflow_run", "schedule_trigger", "limits_set"} <= set(
        refused
    )
    # "replay every dead letter" is refused too; only a replay of one named task is ruled.
    everything = msgspec.convert({"all": True}, verbs.DLQ_REPLAY.request)
    with pytest.raises(PermissionDeniedError):
        await scope.before("acme", acting, verbs.DLQ_REPLAY, everything)


def _empty_ok(request_type: type) -> bool:
    try:
        msgspec.convert({}, request_type)
    except msgspec.ValidationError:
        return False
    return True


@pytest.fixture
async def gw(gw: RunningGateway, gw_config: ClawConfig) -> RunningGateway:
    """The shared gateway, with a key of the attacker's tenant and one of the victim's."""
    tenants = {"mallory": "evil", "victim-app": "victim"}
    roles = (Role.SUBMITTER, Role.OPERATOR, Role.VIEWER)
    gw.keys.update(await create_keys(gw_config, dict.fromkeys(tenants, roles), tenants))
    return gw


async def test_a_tenants_key_cannot_claim_read_or_guess_another_tenants_tasks(
    gw: RunningGateway, gw_config: ClawConfig
) -> None:
    async with gw.client("mallory") as mallory, gw.client("victim-app") as victim:
        sent = await victim.post("/v1/tasks", json={"skill": "echo", "input": {"secret": 1}},
                                 headers={"Idempotency-Key": "order-42"})  # fmt: skip
        theirs = sent.json()["results"][0]["task_id"]

        # A body naming the victim's tenant, through the resource route and the any-verb route.
        for path, body in (
            ("/v1/tasks", {"skill": "echo", "input": {}, "tenant": "victim"}),
            ("/v1/verbs/submit", {"tasks": [{"skill": "echo", "input": {}}], "tenant": "victim"}),
        ):
            answer = await mallory.post(path, json=body)
            assert answer.status_code == 400 and "is not yours" in answer.json()["error"]["message"], path
        # The victim's idempotency key names the victim's task: never answered with its id or state.
        guessed = await mallory.post("/v1/tasks", json={"skill": "echo", "input": {}},
                                     headers={"Idempotency-Key": "order-42"})  # fmt: skip
        assert theirs not in guessed.text
        # A list filter, a verb-by-name list and the states of the victim's ids give nothing.
        assert (await mallory.get("/v1/tasks", params={"tenant": "victim"})).status_code == 400
        by_name = await mallory.post("/v1/verbs/task_list", json={"tenant": "victim"})
        assert by_name.status_code == 400
        states = await mallory.post("/v1/tasks/states", json={"task_ids": [theirs]})
        assert states.json() == {"states": {}}
        mine = (await mallory.get("/v1/tasks")).json()["tasks"]
        assert theirs not in {t["task_id"] for t in mine}

        # The victim's task is not_found for every per-task door, and nothing changed it.
        doors = ("GET", f"/v1/tasks/{theirs}"), ("GET", f"/v1/tasks/{theirs}/events")
        doors += ("POST", f"/v1/tasks/{theirs}/cancel"), ("POST", f"/v1/tasks/{theirs}/retry")
        for method, path in doors:
            answer = await mallory.request(method, path, json={} if method == "POST" else None)
            assert answer.status_code == 404, (path, answer.text)

        async def succeeded() -> bool:
            return bool((await victim.get(f"/v1/tasks/{theirs}")).json()["state"] == "succeeded")

        assert await eventually(succeeded, what="the victim's task ran untouched")

    with sqlite3.connect(gw_config.coordinator.db_path) as db:
        tenants = dict(db.execute("SELECT task_id, tenant FROM tasks").fetchall())
    assert tenants[theirs] == "victim" and set(tenants.values()) <= {"victim", "evil"}

    # The dashboard's tenant filter is the same rule: an error page, not the victim's list.
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        await browser.post("/login", data={"key": gw.keys["mallory"]})
        page = await browser.get("/tasks", params={"tenant": "victim"})
        assert page.status_code == 400 and theirs not in page.text and "is not yours" in page.text
        listing = (await browser.get("/tasks")).text
        assert theirs not in listing and not re.search(r"<td[^>]*>victim</td>", listing)
