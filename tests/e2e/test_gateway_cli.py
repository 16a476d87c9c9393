"""`claw gateway key create | list | revoke` as real processes against a real nats-server."""

from __future__ import annotations

import json
import time

from common.config import NatsSettings
from common.ids import _encode
from common.models import TaskSpec
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from tests.helpers import ProcessPool, wait_until


def test_a_key_is_created_once_listed_without_its_secret_and_revoked(processes: ProcessPool) -> None:
    created = processes.run("gateway", "key", "create", "--name", "alice", "--roles", "submitter,viewer", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["roles"] == ["submitter", "viewer"] and key["key"].startswith(f"ck_{key['key_id']}_")
    listed = processes.run("gateway", "key", "list", "--json")
    assert [(k["name"], k["roles"]) for k in json.loads(listed.stdout)] == [("alice", ["submitter", "viewer"])]
    assert key["key"].split("_")[-1] not in listed.stdout  # only the digest is stored
    again = processes.run("gateway", "key", "create", "--name", "alice", "--roles", "viewer")
    assert again.returncode != 0 and "a key named 'alice' exists" in again.stderr
    revoked = processes.run("gateway", "key", "revoke", "alice")
    assert revoked.returncode == 0 and "revoked 1 key(s) of alice" in revoked.stdout
    gone = processes.run("gateway", "key", "revoke", "alice")
    assert gone.returncode != 0 and "no API key is named 'alice'" in gone.stderr


def test_bad_roles_names_and_listen_addresses_are_one_clear_line(processes: ProcessPool) -> None:
    for args, message in (
        (("key", "create", "--name", "bob", "--roles", "root"), "unknown role(s) root; the roles are admin"),
        (("key", "create", "--name", "b o b", "--roles", "viewer"), "invalid key name 'b o b'"),
        (("start", "--listen", "nowhere"), "--listen 'nowhere' is not HOST:PORT"),
    ):
        result = processes.run("gateway", *args)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_tenants_key_is_created_and_listed_with_its_tenant(processes: ProcessPool) -> None:
    args = ("gateway", "key", "create", "--name", "shop", "--roles", "submitter", "--tenant", "acme", "--json")
    created = processes.run(*args)
    assert created.returncode == 0 and json.loads(created.stdout)["tenant"] == "acme", created.stderr
    assert processes.run("gateway", "key", "create", "--name", "ops", "--roles", "operator").returncode == 0
    listed = processes.run("gateway", "key", "list", "--json")
    assert [(k["name"], k["tenant"]) for k in json.loads(listed.stdout)] == [("shop", "acme"), ("ops", None)]
    table = processes.run("gateway", "key", "list").stdout
    assert "TENANT" in table and "acme" in table and "(all)" in table
    bad = processes.run("gateway", "key", "create", "--name", "x", "--roles", "viewer", "--tenant", "../acme")
    assert bad.returncode != 0 and "is not a valid tenant name" in bad.stderr and "Traceback" not in bad.stderr


async def test_task_list_since_shows_only_recent_tasks_and_refuses_a_bad_duration(
    processes: ProcessPool, nats_server: EmbeddedNatsServer, prefix: str
) -> None:
    processes.spawn("coordinator", "coordinator", "start")
    wait_until(lambda: processes.run("status").returncode == 0, timeout_s=60, what="the coordinator answers")
    old = _encode((int((time.time() - 7200) * 1000) << 80) | 1, 26)  # an id made two hours ago
    async with await ClawClient.connect(NatsSettings(url=nats_server.client_url, prefix=prefix)) as client:
        await client.submit_many([TaskSpec(skill="echo", task_id=old), TaskSpec(skill="echo")])
    every = json.loads(processes.run("task", "list", "--json").stdout)
    recent = json.loads(processes.run("task", "list", "--since", "1h", "--json").stdout)
    assert len(every) == 2 and [t["task_id"] for t in recent] == [t["task_id"] for t in every if t["task_id"] != old]
    bad = processes.run("task", "list", "--since", "yesterday")
    assert bad.returncode != 0 and "'yesterday' is not a duration" in bad.stderr and "Traceback" not in bad.stderr
