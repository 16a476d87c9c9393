"""A stolen gateway credential: with ONLY the HTTP gateway's NATS credentials, try to act as someone
else. The coordinator checks the credential the gateway forwards for the person it names
(coordinator/acting_proof.py): none, someone else's, a forged or self-signed token, a revoked one are
`forbidden` and change nothing; the gateway cannot write the keys bucket (to publish its own token
key or add records), and a viewer cannot read the session secret. The right person's token through
a real gateway approves, recorded under that person's name. Against a real nats-server with
authentication, the permissions `claw creds` generates, a real coordinator, worker and uvicorn."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs

from common import api, verbs
from common.errors import PermissionDeniedError
from common.states import TaskState
from common.verbs import Role
from communication import http_tokens
from communication.api_client import ActingFor, ClawClient
from communication.subjects import Header
from gateway.settings import GatewaySettings
from tests.gateway_helpers import running_gateway
from tests.helpers import eventually, spec
from tests.security.bus import PREFIX, SecuredCluster, secured_cluster

KEYS = f"{PREFIX}_gateway_keys"
SESSIONS = f"{PREFIX}_gateway_sessions"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SecuredCluster]:
    async with secured_cluster(tmp_path) as running:
        yield running


async def _held(cluster: SecuredCluster) -> str:
    """A destructive task alice submitted, held for two approvals."""
    async with cluster.client("alice") as alice:
        submitted = await alice.submit(spec("probe.destroy", {"what": "prod"}))
    assert submitted.state == TaskState.WAITING_APPROVAL, submitted
    return submitted.task_id


async def _untouched(admin: ClawClient, task_id: str) -> None:
    """The task is still held, approved by nobody."""
    assert (await admin.get_task(task_id, history=False)).state == TaskState.WAITING_APPROVAL
    waiting = {view.task_id: view for view in await admin.approvals()}
    assert waiting[task_id].approved_by == []


def _self_signed(claims: dict[str, Any], kid: str) -> str:
    """A token with `claims`, signed with a key the attacker made (claiming the cluster's kid)."""
    return jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid})


async def test_the_gateways_credentials_alone_cannot_approve_as_anyone(cluster: SecuredCluster) -> None:
    task_id = await _held(cluster)
    ann_key = await cluster.http_key("ann", [Role.APPROVER])
    val_token = await cluster.http_token("val", [Role.VIEWER])
    kid = jwt.get_unverified_header(val_token)["kid"]
    ann_claims = {**jwt.decode(val_token, options={"verify_signature": False}), "sub": "ann", "roles": ["approver"]}
    header, _, signature = val_token.split(".")
    forged = {
        "self-signed": _self_signed(ann_claims, kid),
        "edited": ".".join([header, jwt.encode(ann_claims, "x" * 32).split(".")[1], signature]),
        "alg none": jwt.encode(ann_claims, None, algorithm="none"),
        "guessed key": f"ck_{ann_key.split('_')[1]}_{'A' * 43}",
    }
    approve = api.ApproveRequest(task_id=task_id, by="ann")
    with capture_logs() as logs:
        async with cluster.client("gw") as gateway, cluster.client("adam") as admin:
            # (a) naming an approver, without any credential.
            with pytest.raises(PermissionDeniedError, match="acts for 'ann' without their credential"):
                await gateway.call(verbs.APPROVE, approve, acting_for=ActingFor("ann"))
            # (b) a viewer's real token, naming the approver: the name is the token's, not the gateway's.
            with pytest.raises(PermissionDeniedError, match="names 'ann', but the credential it forwarded is val's"):
                await gateway.call(verbs.APPROVE, approve, acting_for=ActingFor("ann", None, val_token))
            # ... and as val: the record's roles count (viewer); a gateway passes on no roles of its own.
            val = ActingFor("val", None, val_token)
            with pytest.raises(PermissionDeniedError, match="approve needs the approver role; val holds viewer"):
                await gateway.call(verbs.APPROVE, approve, acting_for=val)
            # (c) forged, edited, unsigned tokens and a guessed API key.
            for what, credential in forged.items():
                with pytest.raises(PermissionDeniedError, match="does not verify") as refused:
                    await gateway.call(verbs.APPROVE, approve, acting_for=ActingFor("ann", None, credential))
                assert credential not in str(refused.value), what
            await _untouched(admin, task_id)
    refusals = [e for e in logs if e["event"] in ("security.acting_refused", "security.acting_mismatch")]
    assert len(refusals) == 2 + len(forged), refusals
    assert {e["identity"] for e in refusals} == {"gw"}
    # No log line carries a credential.
    logged = json.dumps(logs, default=str)
    for credential in (ann_key, val_token, *forged.values()):
        assert credential not in logged


async def test_a_revoked_token_stops_acting_within_seconds(cluster: SecuredCluster) -> None:
    task_id = await _held(cluster)
    token = await cluster.http_token("rae", [Role.APPROVER, Role.VIEWER])
    rae = ActingFor("rae", None, token)
    async with cluster.client("gw") as gateway, cluster.client("adam") as admin:
        assert (await gateway.call(verbs.TASK_GET, api.TaskGetRequest(task_id=task_id), acting_for=rae)).task_id
        assert await cluster.revoke_http("rae") == 1
        revoked_at = time.monotonic()

        async def refused() -> bool:
            try:
                await gateway.call(verbs.TASK_GET, api.TaskGetRequest(task_id=task_id), acting_for=rae)
            except PermissionDeniedError as exc:
                return "revoked" in str(exc)
            return False

        # The coordinator believes a checked credential for 2 s at most (CACHE_S).
        await eventually(refused, timeout_s=5, interval_s=0.1, what="the revoked token refused")
        assert time.monotonic() - revoked_at < 5
        with pytest.raises(PermissionDeniedError, match="the token was revoked"):
            await gateway.call(verbs.APPROVE, api.ApproveRequest(task_id=task_id), acting_for=rae)
        await _untouched(admin, task_id)


async def test_the_gateway_cannot_write_the_keys_bucket(cluster: SecuredCluster) -> None:
    """Its own public key, a token record or an API key record of its making would let it mint
    credentials: the server refuses every write (and creating or purging the bucket)."""
    private = Ed25519PrivateKey.generate()
    public = http_tokens.public_key_of(private)
    record = http_tokens.new_record("ann", [Role.ADMIN], None, 3600, public.kid)
    writes = {
        f"$KV.{KEYS}.{http_tokens.PUBLIC_KEY_ENTRY}": msgspec.json.encode(public),
        f"$KV.{KEYS}.{record.key_id}": msgspec.json.encode(record),
        f"$KV.{KEYS}.0123456789abcdef": b'{"key_id":"0123456789abcdef","name":"ann"}',
        f"$JS.API.STREAM.PURGE.KV_{KEYS}": b"{}",
        f"$JS.API.STREAM.DELETE.KV_{KEYS}": b"",
        f"$JS.API.STREAM.CREATE.KV_{SESSIONS}": b"{}",
    }
    async with cluster.connect("gw") as nc:
        for subject, payload in writes.items():
            await nc.publish(subject, payload)
        await nc.flush()
        for subject in writes:
            await eventually(lambda s=subject: cluster.violations("Publish", f'"{s}"'), what=f"{subject} refused")
        # It still reads the bucket (what it needs to check credentials): no refusal for that.
        reply = await nc.request(f"$JS.API.STREAM.INFO.KV_{KEYS}", b"", timeout=5)
        assert json.loads(reply.data)["config"]["name"] == f"KV_{KEYS}"
    assert not cluster.violations("Publish", f'"$JS.API.STREAM.INFO.KV_{KEYS}"')
    # Nothing was written: a token the attacker signs is still refused.
    minted = http_tokens.sign(private, record, PREFIX)
    async with cluster.client("gw") as gateway:
        with pytest.raises(PermissionDeniedError, match="does not verify"):
            await gateway.call(verbs.STATUS, api.StatusRequest(), acting_for=ActingFor("ann", None, minted))


async def test_only_gateways_touch_the_session_secret(cluster: SecuredCluster) -> None:
    read = f"$JS.API.DIRECT.GET.KV_{SESSIONS}.$KV.{SESSIONS}.session-secret"
    for name in ("vic", "adam"):
        async with cluster.connect(name) as nc:
            for subject in (read, f"$JS.API.STREAM.MSG.GET.KV_{SESSIONS}", f"$JS.API.STREAM.INFO.KV_{SESSIONS}"):
                await nc.publish(subject, b"{}")
            await nc.flush()
            await eventually(lambda n=nc: len(_violations(n)) >= 3, what=f"{name}: reading the sessions refused")
    async with cluster.connect("vic") as nc:
        await nc.subscribe(f"$KV.{SESSIONS}.>")
        await nc.flush()
        await eventually(lambda: cluster.violations("Subscription", f"$KV.{SESSIONS}"), what="subscription refused")
    async with cluster.connect("gw") as nc:
        reply = await nc.request(f"$JS.API.STREAM.INFO.KV_{SESSIONS}", b"", timeout=5)
        assert json.loads(reply.data)["config"]["name"] == f"KV_{SESSIONS}"
        assert not _violations(nc)


def _violations(nc: Any) -> list[Exception]:
    return [e for e in nc.errors if "permissions violation" in str(e).lower()]


async def test_an_approvers_token_through_a_real_gateway_approves_as_the_approver(cluster: SecuredCluster) -> None:
    task_id = await _held(cluster)
    ann = await cluster.http_token("ann", [Role.APPROVER, Role.VIEWER])
    bea = await cluster.http_key("bea", [Role.APPROVER])
    # The gateway runs with its own credentials only: it reads the keys, it makes none.
    async with running_gateway(cluster.config("gw"), GatewaySettings(port=0), keys={}) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {ann}"}) as http:
            answer = await http.post(f"/v1/approvals/{task_id}/approve", json={"by": "mallory"})
            assert answer.status_code == 200 and answer.json()["approved_by"] == ["ann"], answer.text
        # The dashboard's session carries bea's key, sealed, to forward as her proof.
        async with httpx.AsyncClient(base_url=gw.url) as browser:
            assert (await browser.post("/login", data={"key": bea})).status_code == 303
            assert bea not in browser.cookies["claw_session"]
            page = (await browser.get("/approvals")).text
            csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
            answer = await browser.post(f"/v1/approvals/{task_id}/approve", json={}, headers={"X-CSRF-Token": csrf})
            assert answer.status_code == 200 and answer.json()["approved_by"] == ["ann", "bea"], answer.text
    async with cluster.client("adam") as admin:
        events = (await admin.get_task(task_id)).events
    approvals = [msgspec.json.decode(e.data)["by"] for e in events if e.kind == "approved"]
    assert approvals == ["ann", "bea"]
    # The reply to the gateway never carries the credential back (it echoes the request's headers).
    async with cluster.connect("gw") as nc:
        headers = {Header.ACTING_FOR: "bea", Header.ACTING_CREDENTIAL: bea}
        reply = await nc.request(f"{PREFIX}.api.gw.ping", b"{}", headers=headers, timeout=5)
        assert b'"data"' in reply.data and Header.ACTING_CREDENTIAL not in (reply.headers or {})
