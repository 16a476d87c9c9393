"""Issuing credentials (cli/credentials.py) and the permissions generated from them
(communication/auth_config.py), without a server: files 0600 in a 0700 folder, names bound the way
the coordinator relies on, and each bus role's allow-list."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.credentials import LOCAL_ADMIN_ROLES, ensure, issue, prepare_server
from common.errors import ClawError
from common.identity import BusRole, read_credentials
from common.verbs import Role
from communication.auth_config import permissions
from communication.auth_registry import IdentityRegistry


@pytest.fixture
def auth_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "auth"
    prepare_server(folder)
    return folder


def test_issued_files_are_private_and_the_registry_keeps_no_seed(auth_dir: Path) -> None:
    issued = issue(auth_dir, name="alice", roles=["approver"], out=auth_dir / "alice.creds", prefix="claw",
                   reload=False)  # fmt: skip
    assert auth_dir.stat().st_mode & 0o777 == 0o700
    for path in (issued.path, auth_dir / "identities.json", auth_dir / "nats-server.conf"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    seed = read_credentials(issued.path).seed
    assert seed not in (auth_dir / "identities.json").read_text()
    assert issued.record.public_key in (auth_dir / "nats-server.conf").read_text()


def test_a_workers_name_is_its_node_id_and_bus_roles_stand_alone(auth_dir: Path) -> None:
    with pytest.raises(ClawError, match="a worker's name is its node id"):
        issue(auth_dir, name="w7", roles=["worker"], node_id="w8", out=auth_dir / "w.creds", prefix="claw",
              reload=False)  # fmt: skip
    for roles in (["gateway", "admin"], ["worker", "submitter"]):
        with pytest.raises(ClawError, match="cannot be combined"):
            issue(auth_dir, name="x", roles=roles, out=auth_dir / "x.creds", prefix="claw", reload=False)
    with pytest.raises(ClawError, match="not a valid tenant name"):
        issue(auth_dir, name="t", roles=["submitter"], out=auth_dir / "t.creds", prefix="claw", tenant="a b",
              reload=False)  # fmt: skip
    assert IdentityRegistry.load(auth_dir).all() == []


def test_ensure_keeps_what_exists_and_issues_a_missing_file_anew(auth_dir: Path) -> None:
    first = ensure(auth_dir, name="coordinator", roles=["coordinator"], prefix="claw")
    seed = read_credentials(first).seed
    assert read_credentials(ensure(auth_dir, name="coordinator", roles=["coordinator"], prefix="claw")).seed == seed
    first.unlink()
    again = ensure(auth_dir, name="coordinator", roles=["coordinator"], prefix="claw")
    assert read_credentials(again).seed != seed
    assert [r.name for r in IdentityRegistry.load(auth_dir).all()] == ["coordinator"]


def test_each_bus_role_gets_only_its_own_subjects(auth_dir: Path) -> None:
    for name, roles, node in (("w1", ["worker"], "w1"), ("gw", ["gateway"], None), ("adam", LOCAL_ADMIN_ROLES, None),
                              ("vic", ["viewer"], None)):  # fmt: skip
        issue(auth_dir, name=name, roles=roles, node_id=node, out=auth_dir / f"{name}.creds", prefix="claw",
              reload=False)  # fmt: skip
    records = {r.name: r for r in IdentityRegistry.load(auth_dir).all()}
    worker = permissions(records["w1"], "claw")
    assert {"claw.events.w1.*", "claw.nodes.heartbeat.w1", "claw.api.w1.permit_acquire"} <= set(
        worker["publish"]["allow"]
    )
    assert not [s for s in worker["publish"]["allow"] if s.startswith(("claw.tasks", "claw.api.w1.submit", ">"))]
    assert "claw.flow.cooldown" in worker["subscribe"]["allow"]
    gateway = permissions(records["gw"], "claw")
    assert records["gw"].bus_role == BusRole.GATEWAY and Role.WORKER not in records["gw"].api_roles
    assert "claw.feed.*" in gateway["subscribe"]["allow"]
    # The gateway reads the HTTP credentials (never writes them: it could mint its own) and keeps its
    # session secret in a bucket of its own; the coordinator creates both.
    assert "$JS.API.DIRECT.GET.KV_claw_gateway_keys.>" in gateway["publish"]["allow"]
    writes = ("$KV.claw_gateway_keys", "$JS.API.STREAM.CREATE")
    assert not [s for s in gateway["publish"]["allow"] if s.startswith(writes)]
    assert "$KV.claw_gateway_sessions.>" in gateway["publish"]["allow"]
    admin = permissions(records["adam"], "claw")
    assert "$JS.API.STREAM.CREATE.KV_claw_gateway_keys" not in admin["publish"]["allow"]
    assert "$KV.claw_gateway_keys.>" in admin["publish"]["allow"] and "claw.trigger.adam.>" in admin["publish"]["allow"]
    assert not [s for s in admin["publish"]["allow"] if "claw_gateway_sessions" in s]
    viewer = permissions(records["vic"], "claw")
    viewer_publishes = set(viewer["publish"]["allow"])
    assert not [s for s in viewer_publishes if "claw_gateway" in s]
    assert "claw.api.vic.ping" in viewer_publishes and "claw.api.vic.approve" not in viewer_publishes
    assert not [s for s in viewer["publish"]["allow"] if s.startswith("claw.trigger")]
    for role in (worker, gateway, admin, viewer):
        assert "$KV.claw_audit.>" in role["publish"]["deny"]


def test_docker_compose_gives_every_service_credentials_the_nats_service_issues() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    services = compose["services"]
    command = services["nats"]["command"]
    assert command[:2] == ["nats", "start"] and "--no-auth" not in command
    issued = {"coordinator"} | {command[i + 1] for i, arg in enumerate(command) if arg in ("--worker", "--gateway")}
    clients = {name: s for name, s in services.items() if s.get("build") and name != "nats"}
    assert set(clients) == {"coordinator", "worker-1", "worker-2", "gateway"}
    for name, service in clients.items():
        creds = service["environment"]["CLAW_NATS_CREDS_FILE"]
        assert creds == f"/nats/auth/{name}.creds" and name in issued, name
        assert "nats-data:/nats:ro" in service["volumes"], name
    assert services["coordinator"]["environment"]["CLAW_AUTH_GATEWAYS"] == "gateway"


def test_a_server_config_with_no_identity_left_still_requires_authentication(auth_dir: Path) -> None:
    # nats-server reads an empty user list as no authentication at all: one unusable user stays.
    text = (auth_dir / "nats-server.conf").read_text()
    assert IdentityRegistry.load(auth_dir).all() == [] and text.count('"nkey"') == 1
    assert '"deny":[">"]' in "".join(text.split())


def test_a_worker_bound_to_skills_pulls_only_their_consumers_and_patterns_are_refused(auth_dir: Path) -> None:
    import subprocess
    import sys

    def claw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli", "creds", "create", "--auth-dir", str(auth_dir), *args],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    bound = claw("--role", "worker", "--node-id", "w8", "--skills", "echo,text.upper", "-o", str(auth_dir / "w8.creds"))
    assert bound.returncode == 0, bound.stderr
    assert "it may pull the tasks of: echo, text.upper" in bound.stdout
    assert read_credentials(auth_dir / "w8.creds").skills == ("echo", "text.upper")
    every = claw("--role", "worker", "--node-id", "w9", "-o", str(auth_dir / "w9.creds"))
    assert "it may pull the tasks of: every skill" in every.stdout
    assert read_credentials(auth_dir / "w9.creds").skills is None
    pattern = claw("--role", "worker", "--node-id", "w10", "--skills", "text.*", "-o", str(auth_dir / "w10.creds"))
    assert pattern.returncode != 0 and "Traceback" not in pattern.stderr
    assert "exact skill names, not patterns ('text.*')" in pattern.stderr and len(pattern.stderr.splitlines()) == 1
    person = claw("--role", "submitter", "--name", "sam", "--skills", "echo", "-o", str(auth_dir / "sam.creds"))
    assert person.returncode != 0 and "--skills is for the worker role only" in person.stderr

    w8 = permissions(IdentityRegistry.load(auth_dir).get("w8"), "claw")  # type: ignore[arg-type]
    allow = set(w8["publish"]["allow"])
    assert "$JS.API.CONSUMER.MSG.NEXT.CLAW_TASKS.tasks-text-upper-high" in allow
    assert "$JS.ACK.CLAW_TASKS.tasks-echo-low.>" in allow
    assert not [s for s in allow if s.endswith(("CLAW_TASKS.*", "CLAW_TASKS.>"))]
    assert w8["subscribe"]["allow"].count("claw.wake.echo") == 1 and "claw.wake.*" not in w8["subscribe"]["allow"]
