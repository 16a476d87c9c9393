"""docker-compose.yml runs NATS with TLS. Docker does not run here, so this checks what can be checked:
the one-time step the compose file documents (`claw nats certs`, run in the nats service) makes every
TLS file a service is configured with, at the path that service sees it through its volume; every
service reaches nats by a name the server certificate holds; a real nats-server with the config the
nats service writes (its credentials, the certificates the step made) takes a TLS connection from a
client that trusts that CA and refuses one that does not; and `claw nats start` whose certificate
was never made says so in one line."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath

import msgspec
import pytest
import yaml

from cli.credentials import LOCAL_ADMIN_ROLES, issue, prepare_server
from common.config import TlsSettings
from common.errors import NatsUnavailableError
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from tests.conftest import make_config
from tests.helpers import child_env

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
VOLUME = "nats-data"  # the nats service's volume, where the certificates are made
TLS_ENV = ("CLAW_NATS_TLS_CERT", "CLAW_NATS_TLS_KEY", "CLAW_NATS_TLS_CA")


def services() -> dict[str, dict[str, object]]:
    compose = yaml.safe_load(COMPOSE.read_text())
    return {name: s for name, s in compose["services"].items() if s.get("build")}


def one_time_step() -> list[str]:
    """The `claw nats certs` arguments of the step the compose file's header tells the user to run."""
    [line] = [line for line in COMPOSE.read_text().splitlines() if line.startswith("#") and " nats certs " in line]
    args = shlex.split(line.lstrip("# "))
    assert args[:6] == ["docker", "compose", "run", "--rm", "--no-deps", "nats"], line
    assert args[6:8] == ["nats", "certs"], line
    return args[8:]


def in_volume(service: dict[str, object], path: str) -> PurePosixPath:
    """Where `path`, as `service` sees it, is inside the nats volume (fails if it is not in it)."""
    for mount in service["volumes"]:  # type: ignore[attr-defined]
        source, target = str(mount).split(":")[:2]
        if source == VOLUME and PurePosixPath(path).is_relative_to(target):
            return PurePosixPath(path).relative_to(target)
    raise AssertionError(f"{path} is not in the {VOLUME} volume of this service")


def option(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == name]


def test_the_documented_step_makes_every_tls_file_each_service_is_configured_with(tmp_path: Path) -> None:
    args = one_time_step()
    [out], hosts = option(args, "--out"), option(args, "--host")
    nats = services()["nats"]
    volume = tmp_path / VOLUME
    made = subprocess.run(
        [sys.executable, "-m", "cli", "nats", "certs", "--out", str(volume / in_volume(nats, out)),
         *[a for h in hosts for a in ("--host", h)]],
        capture_output=True, text=True, timeout=60, check=False, env=child_env(),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    written = {PurePosixPath(p.relative_to(volume).as_posix()) for p in volume.rglob("*") if p.is_file()}
    for name, service in services().items():
        env: dict[str, str] = service["environment"]  # type: ignore[assignment]
        assert env["CLAW_NATS_URL"].startswith("tls://"), name
        if name == "nats":
            assert {"CLAW_NATS_TLS_CERT", "CLAW_NATS_TLS_KEY"} <= set(env)
        else:
            assert env["CLAW_NATS_URL"].removeprefix("tls://").split(":")[0] in hosts, name
            assert f"{VOLUME}:/nats:ro" in service["volumes"], name  # type: ignore[operator]
        for var in TLS_ENV:
            if var in env:
                assert in_volume(service, env[var]) in written, (name, var, env[var])
    # The host reaches it as the compose file's header says: by an address the certificate holds.
    assert "127.0.0.1" in hosts and "claw --nats tls://127.0.0.1:4222" in COMPOSE.read_text()
    # Keys stay private; the step refuses to overwrite what it made.
    assert all((volume / p).stat().st_mode & 0o077 == 0 for p in written if p.suffix == ".key")
    again = subprocess.run([sys.executable, "-m", "cli", "nats", "certs", "--out", str(volume / in_volume(nats, out)),
                            "--host", "nats"], capture_output=True, text=True, timeout=60, check=False,
                           env=child_env())  # fmt: skip
    assert again.returncode != 0 and again.stderr.count("\n") == 1 and "never overwritten" in again.stderr


async def test_the_nats_services_config_serves_tls_with_the_certificates_made(tmp_path: Path) -> None:
    """The server config the nats service writes (its environment's TLS files) with the certificates
    the step made: a client trusting the CA connects by the certificate's address, others cannot."""
    args = one_time_step()
    certs = tmp_path / "certs"
    from cli.certs import issue_certs

    issue_certs(certs, option(args, "--host"))
    env: dict[str, str] = services()["nats"]["environment"]  # type: ignore[assignment]
    server_tls = TlsSettings(**{var.removeprefix("CLAW_NATS_TLS_").lower(): str(certs / PurePosixPath(env[var]).name)
                                for var in TLS_ENV})  # fmt: skip
    auth = tmp_path / "auth"
    prepare_server(auth, server_tls)
    issue(auth, name="adam", roles=LOCAL_ADMIN_ROLES, out=auth / "adam.creds", prefix="claw", reload=False)
    prepare_server(auth, server_tls)
    server = await EmbeddedNatsServer(
        NatsServerOptions(store_dir=tmp_path / "nats", port=0, http_port=0, auth_dir=auth)
    ).start_async()
    try:

        def settings(tls: TlsSettings) -> object:
            config = make_config(server, "claw", tmp_path)
            url = server.client_url.replace("nats://", "tls://")
            return msgspec.structs.replace(config.nats, url=url, tls=tls, creds_file=str(auth / "adam.creds"))

        async with await ClawClient.connect(settings(TlsSettings(ca=str(certs / "ca.pem")))) as client:  # type: ignore[arg-type]
            await client.conn.nc.flush()  # a round trip over the TLS connection
            assert client.conn.auth_required and client.conn.nc.is_connected
        with pytest.raises(NatsUnavailableError, match="(?i)certificate"):
            await ClawClient.connect(settings(TlsSettings()))  # type: ignore[arg-type]
    finally:
        server.stop()


def test_nats_start_without_its_certificate_says_how_to_make_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "nats", "start", "--store-dir", str(tmp_path / "nats"), "--port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
        env=child_env(CLAW_NATS_TLS_CERT=str(tmp_path / "server.pem"), CLAW_NATS_TLS_KEY=str(tmp_path / "server.key")),
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr == (
        f"error: the TLS file {tmp_path / 'server.pem'} does not exist: make the certificates once with "
        "`claw nats certs --out DIR --host NAME ...` (docs/Security.md, TLS)\n"
    )
