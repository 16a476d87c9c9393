"""Tenants as an attacker on the bus sees them: raw submit requests with hostile tenant names are
refused whole (nothing stored), a quota cannot be dodged by a near-duplicate of a tenant's name, and
once credentials carry a tenant, a request cannot claim another one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from common.api import SubmitRequest
from common.errors import InvalidInputError, QuotaExceededError
from communication.nats_server import EmbeddedNatsServer
from coordinator.tenants.identity import Caller, tenant_of_submit
from tests.conftest import make_config
from tests.helpers import connected_client, running_coordinator, spec

HOSTILE = [
    "",
    " acme",
    "acme ",
    "acme\x00",
    "ACME'; DROP TABLE tasks; --",
    "../default",
    "a" * 65,
    "\u0430cme",  # a Cyrillic a: looks like acme
    "tenant:acme",
    "acme*",
]


@pytest.mark.parametrize("tenant", HOSTILE)
async def test_hostile_tenant_names_are_refused_on_the_bus_and_nothing_is_stored(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, tenant: str
) -> None:
    config = make_config(nats_server, prefix, tmp_path, tenants={"quotas": {"acme": {"max_queued": 1}}})
    body = msgspec.json.encode({"tasks": [{"skill": "echo", "input": {}}], "tenant": tenant})
    async with running_coordinator(config), connected_client(config) as client:
        reply = await client.conn.nc.request(client.conn.subjects.api(client.conn.identity, "submit"), body, timeout=10)
    answer = msgspec.json.decode(reply.data)
    assert answer["error"]["code"] == "invalid_input", answer
    assert "not a valid tenant name" in answer["error"]["message"]
    with sqlite3.connect(config.coordinator.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 0


async def test_a_full_quota_is_not_dodged_by_case_or_a_default_alias(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    """Names are exact: `ACME` is another tenant (with the default quota), never acme's quota reset."""
    config = make_config(
        nats_server,
        prefix,
        tmp_path,
        tenants={"default_quota": {"max_queued": 1}, "quotas": {"acme": {"max_queued": 1}}},
    )
    async with running_coordinator(config), connected_client(config) as client:
        await client.submit(spec("echo"), tenant="acme")
        await client.submit(spec("echo"), tenant="ACME")
        await client.submit(spec("echo"))  # `default`
        for tenant in ("acme", "ACME", "default", None):
            with pytest.raises(QuotaExceededError, match="quota exceeded"):
                await client.submit(spec("echo"), tenant=tenant)


def test_credentials_decide_the_tenant_and_a_request_cannot_claim_another() -> None:
    request = SubmitRequest(tasks=[], tenant="victim")
    with pytest.raises(InvalidInputError, match="not yours"):
        tenant_of_submit(request, Caller(tenant="mallory"))
    assert tenant_of_submit(SubmitRequest(tasks=[]), Caller(tenant="mallory")) == "mallory"
    assert tenant_of_submit(SubmitRequest(tasks=[], tenant="mallory"), Caller(tenant="mallory")) == "mallory"
    assert tenant_of_submit(SubmitRequest(tasks=[])) == "default"


async def test_an_idempotency_key_never_hands_one_tenant_another_tenants_task(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    """Keys are one namespace: a guessed key of another tenant is refused, never answered with the
    victim's task id and state; the owner's own retry still gets its task back."""
    config = make_config(nats_server, prefix, tmp_path)
    async with running_coordinator(config), connected_client(config) as client:
        victim = await client.submit(spec("echo", idempotency_key="nightly-report"), tenant="victim")
        with pytest.raises(InvalidInputError, match="taken by another tenant's task") as refused:
            await client.submit(spec("echo", idempotency_key="nightly-report"), tenant="mallory")
        assert victim.task_id not in str(refused.value)
        again = await client.submit(spec("echo", idempotency_key="nightly-report"), tenant="victim")
    assert again.duplicate and again.task_id == victim.task_id
    with sqlite3.connect(config.coordinator.db_path) as db:
        assert db.execute("SELECT tenant FROM tasks").fetchall() == [("victim",)]
