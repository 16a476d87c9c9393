"""Signed HTTP tokens (`claw creds create NAME --role ... --http`) attacked as a caller would: a forged
signature, a token signed with another cluster's key, roles or tenant edited in the claims, alg
`none` and an HMAC token keyed with the public key, an expired token, a revoked one. Each is refused
with a JSON error and changes nothing; the right token submits, approves as an approver, and a viewer's
cannot approve. Against a real coordinator, worker, nats-server, uvicorn and `claw` subprocesses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.config import ClawConfig
from communication import http_tokens as tokens
from tests.gateway_helpers import RunningGateway
from tests.helpers import ProcessPool, connected_client, eventually


@pytest.fixture
def auth_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "token-auth"
    folder.mkdir(mode=0o700)
    return folder


async def claw(processes: ProcessPool, *args: str) -> subprocess.CompletedProcess[str]:
    """`claw ARGS` run to completion off the event loop (the coordinator in this process keeps its
    lease, 4 s here, only while the loop runs)."""
    return await asyncio.to_thread(processes.run, *args)


async def issue(processes: ProcessPool, auth_dir: Path, name: str, roles: str, *extra: str) -> str:
    """A token from `claw creds create NAME --role ROLES --http` (a real subprocess)."""
    out = auth_dir.parent / f"{name}-{time.monotonic_ns()}.token"
    done = await claw(processes, "creds", "create", name, "--role", roles, "--http", "--auth-dir", str(auth_dir),
                         "-o", str(out), *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    return out.read_text().strip()


def bearer(gw: RunningGateway, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _edited(token: str, **changes: Any) -> str:
    """The token with its claims edited and its signature kept (what an attacker without the key can do)."""
    header, _, signature = token.split(".")
    return ".".join([header, _b64({**_claims(token), **changes}), signature])


async def _refused(gw: RunningGateway, token: str, held: str, why: str) -> None:
    """`token` cannot submit, read or approve: 401 with a JSON error saying `why`."""
    async with bearer(gw, token) as attacker:
        for method, path, body in (
            ("POST", "/v1/tasks", {"skill": "echo", "input": {"n": 1}}),
            ("POST", f"/v1/approvals/{held}/approve", {}),
            ("GET", "/v1/tasks", None),
        ):
            answer = await attacker.request(method, path, json=body)
            assert answer.status_code == 401, (why, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "unauthenticated" and why in error["message"], (why, error)


async def test_the_right_token_submits_and_approves_and_a_viewer_token_cannot_approve(
    gw: RunningGateway, processes: ProcessPool, auth_dir: Path
) -> None:
    alice = await issue(processes, auth_dir, "alice", "approver,viewer")
    victor = await issue(processes, auth_dir, "victor", "viewer")
    key = (auth_dir / tokens.SIGNING_KEY_FILE).stat()
    assert key.st_mode & 0o777 == 0o600 and "alice" not in (auth_dir / tokens.SIGNING_KEY_FILE).read_text()
    sub = await issue(processes, auth_dir, "sub", "submitter")
    async with bearer(gw, sub) as submitter, bearer(gw, alice) as approver, bearer(gw, victor) as viewer:
        held = await submitter.post("/v1/tasks", json={"skill": "echo", "input": {"hold": True}})
        assert held.status_code == 200 and held.json()["results"][0]["state"] == "waiting_approval", held.text
        task_id = held.json()["results"][0]["task_id"]
        waiting = (await approver.get("/v1/approvals")).json()["approvals"]
        assert [(a["task_id"], a["submitter"]) for a in waiting] == [(task_id, "sub")]
        denied = await viewer.post(f"/v1/approvals/{task_id}/approve", json={})
        assert denied.status_code == 403 and "needs the approver role" in denied.json()["error"]["message"]
        approved = await approver.post(f"/v1/approvals/{task_id}/approve", json={"by": "mallory"})
        assert approved.status_code == 200 and approved.json()["approved_by"] == ["alice"], approved.text
    # The dashboard's login takes a token too.
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        login = await browser.post("/login", data={"key": victor})
        assert login.status_code == 303
        assert (await browser.get("/v1/status")).status_code == 200
    listed = await claw(processes, "creds", "list", "--auth-dir", str(auth_dir), "--json")
    assert listed.returncode == 0, listed.stderr
    assert {(c["name"], c["kind"]) for c in json.loads(listed.stdout)} >= {("alice", "http"), ("victor", "http")}


async def test_forged_edited_foreign_and_unsigned_tokens_are_refused_and_change_nothing(
    gw: RunningGateway, processes: ProcessPool, auth_dir: Path, gw_config: ClawConfig
) -> None:
    viewer = await issue(processes, auth_dir, "vic", "viewer")
    tenant_token = await issue(processes, auth_dir, "tina", "submitter", "--tenant", "acme")
    async with gw.client("sam") as sam:
        held = (await sam.post("/v1/tasks", json={"skill": "echo", "input": {"hold": True}})).json()
    task_id = held["results"][0]["task_id"]
    claims = _claims(viewer)
    other_cluster = Ed25519PrivateKey.generate()
    # The same claims, signed with another cluster's key (it may even claim this cluster's kid).
    kid = jwt.get_unverified_header(viewer)["kid"]
    foreign = jwt.encode(claims, other_cluster, algorithm="EdDSA", headers={"kid": kid})
    foreign_kid = jwt.encode(claims, other_cluster, algorithm="EdDSA", headers={"kid": "0123456789abcdef"})
    # alg none, and HS256 keyed with the (public) verification key: the classic algorithm confusions.
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'roles': ['admin']})}."
    public_pem = (
        serialization.load_pem_private_key((auth_dir / tokens.SIGNING_KEY_FILE).read_bytes(), password=None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64({**claims, 'roles': ['admin']})}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    garbage_signature = viewer[: viewer.rindex(".") + 1] + "A" * 86
    attempts = {
        "signature does not verify": [
            _edited(viewer, roles=["approver", "admin"]),
            _edited(tenant_token, tenant="globex"),
            _edited(tenant_token, tenant=None),
            _edited(viewer, sub="ada"),
            garbage_signature,
            foreign,
        ],
        "not signed with this cluster's key": [foreign_kid],
        "'none' is refused": [unsigned],
        "'HS256' is refused": [confused],
    }
    for why, forged in attempts.items():
        for token in forged:
            await _refused(gw, token, task_id, why)
    # Nothing changed: the held task is still held, and no task but it exists.
    async with connected_client(gw_config) as client:
        assert (await client.get_task(task_id)).state == "waiting_approval"
    async with gw.client("vera") as vera:
        assert [t["task_id"] for t in (await vera.get("/v1/tasks")).json()["tasks"]] == [task_id]
        # The tenant's real token is held to its tenant: its claim is what counts.
        async with bearer(gw, tenant_token) as tina:
            mine = await tina.post("/v1/tasks", json={"skill": "echo", "tenant": "globex"})
            assert mine.status_code == 400 and "is not yours" in mine.json()["error"]["message"], mine.text


async def test_an_expired_token_is_refused(gw: RunningGateway, processes: ProcessPool, auth_dir: Path) -> None:
    brief = await issue(processes, auth_dir, "brief", "viewer", "--ttl", "2s")
    async with bearer(gw, brief) as holder:

        async def expired() -> bool:
            answer = await holder.get("/v1/status")
            return answer.status_code == 401 and "expired" in answer.json()["error"]["message"]

        await eventually(expired, timeout_s=20, what="the token refused once expired")
    async with gw.client("sam") as sam:
        held = (await sam.post("/v1/tasks", json={"skill": "echo", "input": {"hold": True}})).json()
    await _refused(gw, brief, held["results"][0]["task_id"], "expired")


async def test_a_revoked_token_is_refused_by_the_running_gateway(
    gw: RunningGateway, processes: ProcessPool, auth_dir: Path
) -> None:
    token = await issue(processes, auth_dir, "rita", "submitter,viewer")
    kept = await issue(processes, auth_dir, "kim", "viewer")
    async with bearer(gw, token) as rita, httpx.AsyncClient(base_url=gw.url) as browser:
        assert (await rita.get("/v1/status")).status_code == 200
        assert (await browser.post("/login", data={"key": token})).status_code == 303
        assert (await browser.get("/v1/status")).status_code == 200
        done = await claw(processes, "creds", "revoke", "rita", "--auth-dir", str(auth_dir))
        assert done.returncode == 0 and "1 HTTP token(s) of rita revoked" in done.stdout, done.stderr

        async def refused() -> bool:
            return (await rita.get("/v1/status")).status_code == 401

        await eventually(refused, timeout_s=10, what="the revoked token refused")
        answer = await rita.post("/v1/tasks", json={"skill": "echo"})
        assert answer.json()["error"]["message"] == "the token was revoked (or never issued by this cluster)"
        await eventually(lambda: _status(browser, 401), timeout_s=10, what="the revoked token's session refused")
    async with bearer(gw, kept) as kim:
        assert (await kim.get("/v1/status")).status_code == 200
        assert (await kim.get("/v1/tasks")).json()["tasks"] == []
    listed = await claw(processes, "creds", "list", "--auth-dir", str(auth_dir), "--json")
    assert [c["name"] for c in json.loads(listed.stdout) if c["kind"] == "http"] == ["kim"]
    again = await claw(processes, "creds", "revoke", "rita", "--auth-dir", str(auth_dir))
    assert again.returncode != 0 and "no credentials or HTTP tokens are named 'rita'" in again.stderr


async def _status(http: httpx.AsyncClient, status: int) -> bool:
    return (await http.get("/v1/status")).status_code == status


async def test_rotating_the_signing_key_ends_every_token(
    gw: RunningGateway, processes: ProcessPool, auth_dir: Path
) -> None:
    old = await issue(processes, auth_dir, "olga", "viewer")
    rotated = await claw(processes, "creds", "rotate", "--http", "--auth-dir", str(auth_dir))
    assert rotated.returncode == 0, rotated.stderr
    new = await issue(processes, auth_dir, "olga", "viewer")
    async with bearer(gw, old) as stale, bearer(gw, new) as fresh:

        async def swapped() -> bool:
            return (await stale.get("/v1/status")).status_code == 401 and (
                await fresh.get("/v1/status")
            ).status_code == 200

        await eventually(swapped, timeout_s=10, what="the old key's token refused and the new one accepted")


def test_bad_token_requests_are_one_clear_line(processes: ProcessPool, auth_dir: Path) -> None:
    for args, says in (
        (("--role", "worker"), "unknown role(s) worker"),
        (("--role", "viewer", "--ttl", "soon"), "is not a duration"),
        (("--role", "viewer", "--tenant", "bad tenant!"), "tenant"),
    ):
        done = processes.run("creds", "create", "nina", "--http", "--auth-dir", str(auth_dir), *args)
        assert done.returncode != 0 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
