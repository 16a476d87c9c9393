"""TLS to NATS with a certificate authority the test makes (`trustme`): the embedded server with the
server's certificate, clients that trust the CA connect (and run a task), clients that do not are
refused; with `verify`, a client also needs a certificate from the CA (mutual TLS)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

trustme = pytest.importorskip("trustme")

from cli.credentials import LOCAL_ADMIN_ROLES, issue, prepare_server  # noqa: E402
from common.config import ClawConfig, TlsSettings  # noqa: E402
from common.errors import NatsUnavailableError  # noqa: E402
from common.states import TaskState  # noqa: E402
from communication.api_client import ClawClient  # noqa: E402
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from tests.helpers import running_coordinator, running_worker, spec, wait_nodes_online  # noqa: E402


@pytest.fixture
def ca(tmp_path: Path) -> dict[str, Path]:
    authority = trustme.CA()
    server = authority.issue_cert("127.0.0.1", "localhost")
    client = authority.issue_cert("client@claw")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "server", "server_key", "client", "client_key")}
    authority.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["server"]))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return files


def _server(tmp_path: Path, tls: TlsSettings) -> EmbeddedNatsServer:
    auth = tmp_path / "auth"
    prepare_server(auth, tls)
    for name, roles, node in (("coordinator", ["coordinator"], None), ("w1", ["worker"], "w1"),
                              ("adam", LOCAL_ADMIN_ROLES, None)):  # fmt: skip
        issue(auth, name=name, roles=roles, out=auth / f"{name}.creds", prefix="claw", node_id=node, reload=False)
    prepare_server(auth, tls)
    return EmbeddedNatsServer(NatsServerOptions(store_dir=tmp_path / "nats", port=0, http_port=0, auth_dir=auth))


def _config(server: EmbeddedNatsServer, tmp_path: Path, creds: str, tls: TlsSettings | None, **s: object) -> ClawConfig:
    config = make_config(server, "claw", tmp_path, **s)  # type: ignore[arg-type]
    url = server.client_url.replace("nats://", "tls://")
    nats_ = msgspec.structs.replace(
        config.nats, url=url, tls=tls, creds_file=str(tmp_path / "auth" / creds), request_timeout_s=5.0
    )
    return msgspec.structs.replace(config, nats=nats_)


async def test_clients_that_trust_the_ca_run_a_task_over_tls_and_others_are_refused(
    tmp_path: Path, ca: dict[str, Path]
) -> None:
    server = await _server(tmp_path, TlsSettings(cert=str(ca["server"]), key=str(ca["server_key"]))).start_async()
    try:
        trust = TlsSettings(ca=str(ca["ca"]))
        coordinator = _config(server, tmp_path, "coordinator.creds", trust, auth={"dir": str(tmp_path / "auth")})
        worker = _config(server, tmp_path, "w1.creds", trust, worker={"node_id": "w1"})
        async with running_coordinator(coordinator), running_worker(worker):
            async with await ClawClient.connect(_config(server, tmp_path, "adam.creds", trust).nats) as client:
                await wait_nodes_online(client, 1)
                submitted = await client.submit(spec("echo", {"over": "tls"}))
                assert await client.wait([submitted.task_id], timeout_s=30) == {submitted.task_id: TaskState.SUCCEEDED}
            # Without the CA the server's certificate is not trusted: refused, in one line.
            with pytest.raises(NatsUnavailableError, match="(?i)certificate"):
                await ClawClient.connect(_config(server, tmp_path, "adam.creds", TlsSettings()).nats)
    finally:
        server.stop()


async def test_with_verify_a_client_needs_a_certificate_from_the_ca(tmp_path: Path, ca: dict[str, Path]) -> None:
    tls = TlsSettings(cert=str(ca["server"]), key=str(ca["server_key"]), ca=str(ca["ca"]), verify=True)
    server = await _server(tmp_path, tls).start_async()
    try:
        only_ca = TlsSettings(ca=str(ca["ca"]))
        with pytest.raises(NatsUnavailableError):
            await ClawClient.connect(_config(server, tmp_path, "adam.creds", only_ca).nats)
        mutual = TlsSettings(ca=str(ca["ca"]), cert=str(ca["client"]), key=str(ca["client_key"]))
        async with await ClawClient.connect(_config(server, tmp_path, "adam.creds", mutual).nats) as client:
            assert client.conn.is_connected and client.conn.auth_required
    finally:
        server.stop()
