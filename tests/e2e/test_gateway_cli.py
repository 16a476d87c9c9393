"""`claw gateway key create | list | revoke` as real processes against a real nats-server."""

from __future__ import annotations

import json

from tests.helpers import ProcessPool


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
