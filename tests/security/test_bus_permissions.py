"""The server's permissions, probed as an attacker on the bus would: every role may publish and
subscribe only where `communication/auth_config.py` says, no credentials means no connection, and
every refusal is in nats-server's log. Each probe also runs once with the role that may, to show
the subject works. A real nats-server with authentication, a coordinator and a worker (uvloop).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from structlog.testing import capture_logs

from cli.credentials import issue, prepare_server, revoke
from common.config import NatsSettings
from common.errors import NatsUnavailableError
from common.identity import read_credentials
from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from tests.helpers import eventually, spec
from tests.security.bus import NOT_COORDINATOR, SecuredCluster, secured_cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SecuredCluster]:
    async with secured_cluster(tmp_path) as running:
        yield running


async def test_without_credentials_nothing_connects(cluster: SecuredCluster) -> None:
    with pytest.raises(Exception, match="(?i)authorization"):
        async with cluster.connect(None):
            pass
    with pytest.raises(NatsUnavailableError) as refused:
        await ClawClient.connect(cluster.config(None).nats)
    assert "\n" not in str(refused.value) and "Authorization Violation" in str(refused.value)
    assert cluster.server_log().count("- authentication error") >= 2


@pytest.mark.parametrize("name", [n for n in NOT_COORDINATOR if n is not None])
async def test_subscribing_to_everything_is_refused_and_reads_nothing(cluster: SecuredCluster, name: str) -> None:
    seen: list[str] = []

    async def on_msg(msg: object) -> None:
        seen.append(getattr(msg, "subject", ""))

    async with cluster.connect(name) as nc, cluster.client("alice") as alice:
        await nc.subscribe("claw.>", cb=on_msg)
        await nc.subscribe("claw.events.>", cb=on_msg)
        await nc.flush()
        await eventually(lambda: cluster.violations("Subscription", '"claw.>"'), what="the refusal in the log")
        submitted = await alice.submit(spec("echo", {"secret": "input"}))
        assert await alice.wait([submitted.task_id], timeout_s=30) == {submitted.task_id: TaskState.SUCCEEDED}
        await nc.flush()
    assert seen == []
    assert cluster.violations("Subscription", '"claw.events.>"')

    # The coordinator may: the same subscription sees the next task's messages.
    async with cluster.connect("coordinator") as nc, cluster.client("alice") as alice:
        sub = await nc.subscribe("claw.>", cb=on_msg)
        await nc.flush()
        submitted = await alice.submit(spec("echo", {"seen": True}))
        await alice.wait([submitted.task_id], timeout_s=30)
        await eventually(lambda: any(".events." in s for s in seen), what="the coordinator seeing events")
        await sub.unsubscribe()


# (identity, subject it publishes on, whether the server lets it)
PUBLISH = [
    ("w2", "claw.events.w1.T", False),
    ("w2", "claw.events.w2.T", True),
    ("w2", "claw.nodes.heartbeat.w1", False),
    ("w2", "claw.nodes.heartbeat.w2", True),
    ("w2", "claw.nodes.claims.w1", False),
    ("w2", "claw.tasks.normal.echo", False),
    ("w2", "claw.api.w2.submit", False),
    ("w2", "$KV.claw_audit.head", False),
    ("w2", "$KV.claw_skills.registry", False),
    ("w2", "$KV.claw_nodes.w1", False),
    ("w2", "$JS.API.STREAM.PURGE.CLAW_TASKS", False),
    ("w2", "$JS.API.DIRECT.GET.KV_claw_audit.$KV.claw_audit.head", False),
    ("alice", "claw.api.bob.approve", False),
    ("alice", "claw.api.alice.ping", True),
    ("alice", "claw.events.w1.T", False),
    ("alice", "claw.tasks.normal.echo", False),
    ("alice", "$JS.API.STREAM.INFO.CLAW_EVENTS", False),
    ("cli", "claw.ctl.w1", False),
    ("cli", "claw.cancel.T", False),
    ("vic", "claw.api.vic.task_cancel", False),
    ("vic", "claw.api.vic.dlq_purge", False),
    ("vic", "claw.api.vic.ping", True),
    ("coordinator", "claw.tasks.normal.nothing", True),
    # Coordinator-only state (trial probes): the replication stream a standby executes, the leader
    # lease, the standbys' reports, the snapshot store, flow control's cooldowns, the DLQ per task.
    ("w2", "claw.repl", False),
    ("adam", "claw.repl", False),
    ("w2", "$KV.claw_coordinator.leader", False),
    ("adam", "$KV.claw_coordinator.leader", False),
    ("w2", "$KV.claw_standbys.standby.w2", False),
    ("w2", "$O.claw_repl.x", False),
    ("w2", "$JS.API.STREAM.PURGE.CLAW_REPL", False),
    ("w2", "claw.flow.cooldown", False),
    ("adam", "claw.flow.cooldown", False),
    ("w2", "claw.dlq.echo.T", False),
    ("w2", "claw.dlq.echo", False),  # poison goes through w2's own report subject (the coordinator writes it)
    ("w2", "claw.events.w2.poison", True),
    ("alice", "claw.dlq.echo", False),
    # A worker bound to a skill set (w3: echo) pulls, acks and creates only those skills' consumers;
    # one bound to none (w2) pulls any skill's.
    ("w3", "$JS.API.CONSUMER.MSG.NEXT.CLAW_TASKS.tasks-probe-destroy-normal", False),
    ("w3", "$JS.API.CONSUMER.MSG.NEXT.CLAW_TASKS.tasks-probe-destroy-high", False),
    ("w3", "$JS.API.CONSUMER.INFO.CLAW_TASKS.tasks-probe-destroy-low", False),
    ("w3", "$JS.API.CONSUMER.CREATE.CLAW_TASKS.tasks-shell-exec-normal.claw.tasks.normal.shell-exec", False),
    ("w3", "$JS.API.CONSUMER.DURABLE.CREATE.CLAW_TASKS.tasks-shell-exec-normal", False),
    ("w3", "$JS.ACK.CLAW_TASKS.tasks-probe-destroy-normal.1.1.1.1.0", False),
    ("w3", "$JS.API.CONSUMER.MSG.NEXT.CLAW_TASKS.tasks-echo-normal", True),
    ("w3", "$JS.API.CONSUMER.INFO.CLAW_TASKS.tasks-echo-low", True),
    ("w2", "$JS.API.CONSUMER.MSG.NEXT.CLAW_TASKS.tasks-probe-destroy-low", True),
    # Schedule triggers only under one's own identity (the coordinator reads who fires from it).
    ("alice", "claw.trigger.alice.inbox.new", True),
    ("alice", "claw.trigger.bob.inbox.new", False),
    ("alice", "claw.trigger.inbox.new", False),
    ("vic", "claw.trigger.vic.inbox.new", False),
    ("w2", "claw.trigger.w2.inbox.new", False),
]


async def test_each_role_publishes_only_on_its_own_subjects(cluster: SecuredCluster) -> None:
    """Every row of PUBLISH against one cluster (a cluster per row cost minutes of the suite)."""
    for name, subject, allowed in PUBLISH:
        async with cluster.connect(name) as nc:
            await nc.publish(subject, b"{}")
            await nc.flush()
            if allowed:
                # A refusal is sent before the flush's PONG: none came, and none is logged.
                refused = [e for e in nc.errors if "permissions violation" in str(e).lower()]  # type: ignore[attr-defined]
                assert not refused, (name, subject)
                assert not cluster.violations("Publish", f'"{subject}"'), (name, subject)
            else:
                await eventually(
                    lambda s=subject: cluster.violations("Publish", f'"{s}"'), what=f"{name}: {subject} refused"
                )
                await eventually(
                    lambda c=nc: [e for e in c.errors if "permissions violation" in str(e).lower()],  # type: ignore[attr-defined]
                    what=f"{name}: the refusal of {subject} sent to the client",
                )


# (identity, subject it subscribes to, whether the server lets it)
SUBSCRIBE = [
    ("w2", "_INBOX_alice.>", False),
    ("w2", "claw.ctl.w1", False),
    ("w2", "claw.ctl.w2", True),
    ("alice", "_INBOX_bob.>", False),
    ("alice", "_INBOX_alice.x", True),
    ("alice", "claw.updates.*", True),
    ("vic", "$KV.claw_audit.>", False),
    ("cli", "claw.nodes.heartbeat.*", False),
    ("w3", "claw.wake.probe-destroy", False),
    ("w3", "claw.wake.echo", True),
]


async def test_each_role_subscribes_only_to_its_own_subjects(cluster: SecuredCluster) -> None:
    """Every row of SUBSCRIBE against one cluster."""
    for name, subject, allowed in SUBSCRIBE:
        async with cluster.connect(name) as nc:
            await nc.subscribe(subject)
            await nc.flush()
            if allowed:
                assert not cluster.violations("Subscription", f'"{subject}"'), (name, subject)
            else:
                await eventually(
                    lambda s=subject: cluster.violations("Subscription", f'"{s}"'), what=f"{name}: {subject} refused"
                )


async def test_revoked_credentials_are_cut_off_at_once_without_a_restart(cluster: SecuredCluster) -> None:
    async with cluster.connect("cli") as nc:
        await nc.flush()
        record, reloaded = await asyncio.to_thread(revoke, cluster.auth_dir, "cli")
        assert record.name == "cli" and reloaded
        # The server drops the open connection of a user it no longer knows ...
        await eventually(lambda: not nc.is_connected, what="the revoked connection dropped")
    # ... and refuses a new one; the others keep working.
    with pytest.raises(Exception, match="(?i)authorization"):
        async with cluster.connect("cli"):
            pass
    async with cluster.client("alice") as alice:
        assert (await alice.ping()).version


async def test_a_connection_without_credentials_to_an_open_server_over_a_network_is_warned(
    nats_server: EmbeddedNatsServer, cluster: SecuredCluster
) -> None:
    port = nats_server.client_url.rsplit(":", 1)[1]
    with capture_logs() as logs:
        # 0.0.0.0 as a destination reaches this machine (no traffic leaves it), but is not a loopback name.
        async with await ClawClient.connect(NatsSettings(url=f"nats://0.0.0.0:{port}")):
            pass
        async with await ClawClient.connect(NatsSettings(url=nats_server.client_url)):
            pass  # loopback: this machine only, no warning
        async with cluster.client("alice"):
            pass  # with credentials: none either
    warned = [e for e in logs if e["event"] == "nats.no_authentication"]
    assert len(warned) == 1 and warned[0]["url"] == f"nats://0.0.0.0:{port}"


async def test_every_server_sharing_an_auth_folder_reloads_new_and_revoked_credentials(tmp_path: Path) -> None:
    """`claw up --nats-nodes 3` runs several servers on one auth folder: claw creds reloads each."""
    auth = tmp_path / "auth"
    prepare_server(auth)
    servers = []
    try:
        for name in ("s1", "s2"):
            options = NatsServerOptions(store_dir=tmp_path / name, port=0, http_port=0, auth_dir=auth)
            servers.append(await EmbeddedNatsServer(options).start_async())
        out = tmp_path / "late.creds"
        issued = await asyncio.to_thread(issue, auth, name="late", roles=["viewer"], out=out, prefix="claw")
        assert issued.reloaded
        seed = read_credentials(out).seed
        for server in servers:  # both know the new identity at once
            await _login(server.client_url, seed)
        _, reloaded = await asyncio.to_thread(revoke, auth, "late")
        assert reloaded
        for server in servers:  # and both refuse it once revoked, though no identity is left at all
            with pytest.raises(Exception, match="(?i)authorization"):
                await _login(server.client_url, seed)
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)


async def _login(url: str, seed: str) -> None:
    """Connect with an NKey seed and close; a refused login raises (its socket closed too)."""
    nc = NatsClient()
    try:
        await nc.connect(url, nkeys_seed_str=seed, allow_reconnect=False, max_reconnect_attempts=0)
    finally:
        await nc.close()
