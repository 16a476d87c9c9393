"""The coordinator's lease on a prefix (real nats-server, in-process coordinators and leases)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from common.config import ClawConfig
from common.errors import LeaseHeldError, LeaseLostError
from common.models import NodeHeartbeat
from common.states import NodeStatus
from communication.connection import NatsConnection
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from communication.topology import Topology
from coordinator.lease import CoordinatorLease
from coordinator.service import Coordinator
from tests.conftest import make_config
from tests.helpers import connected_client, eventually, running_coordinator


def lease_config(config: ClawConfig, *, ttl_s: float = 2.0, renew_s: float = 0.3) -> ClawConfig:
    settings = msgspec.structs.replace(config.coordinator, lease_ttl_s=ttl_s, lease_renew_interval_s=renew_s)
    return msgspec.structs.replace(config, coordinator=settings)


@contextlib.asynccontextmanager
async def held_lease(config: ClawConfig, node_id: str) -> AsyncIterator[CoordinatorLease]:
    conn = await NatsConnection.connect(config.nats, name=node_id)
    lease = None
    try:
        lease = await CoordinatorLease.acquire(
            conn, Topology(conn, config.jetstream), config.coordinator, node_id, now=time.time()
        )
        yield lease
    finally:
        if lease is not None:
            await lease.release()
        await conn.close()


async def test_a_second_coordinator_is_refused_naming_the_live_one_and_starts_at_once_after_a_clean_stop(
    config: ClawConfig,
) -> None:
    async with running_coordinator(config) as first:
        started = time.monotonic()
        with pytest.raises(LeaseHeldError) as refused:
            await Coordinator.start(config)
        # Refused once it saw the live one renew: about one renewal interval, not a whole TTL.
        assert time.monotonic() - started < config.coordinator.lease_ttl_s
        message = str(refused.value)
        assert f"prefix '{config.nats.prefix}'" in message and first.node_id in message and "pid" in message
        async with connected_client(config) as client:
            assert (await client.ping()).node_id == first.node_id  # the first one is untouched
    with capture_logs() as logs:
        async with running_coordinator(config):
            pass
    assert not [e for e in logs if e["event"] == "lease.waiting"]  # released on stop: no wait


async def test_a_frozen_holder_whose_lease_was_taken_over_refuses_every_write(config: ClawConfig) -> None:
    config = lease_config(config)
    async with held_lease(config, "first") as first:
        await first.writable()
        taken, done = threading.Event(), threading.Event()

        def second_holder() -> None:
            async def hold() -> None:
                async with held_lease(config, "second") as second:
                    taken.set()
                    await asyncio.to_thread(done.wait, 30)
                    assert second.held

            asyncio.run(hold())

        thread = threading.Thread(target=second_holder)
        thread.start()
        try:
            # Blocking here freezes this event loop, `first` with it, until `second` holds the lease:
            # first's entry lapsed on the server, since nobody renewed it.
            assert taken.wait(30)
            with pytest.raises(LeaseLostError, match="taken over by second"):
                await first.writable()
            with pytest.raises(LeaseLostError, match="taken over by second"):
                first.check()
            assert not first.held
        finally:
            done.set()
            thread.join(30)


async def test_a_lease_that_lapsed_while_nats_was_down_is_taken_back_when_nobody_held_it(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(NatsServerOptions(store_dir=tmp_path / "nats", port=0, http_port=0)).start()
    ports = (int(server.client_url.rsplit(":", 1)[1]), int(server.monitor_url.rsplit(":", 1)[1]))
    config = lease_config(make_config(server, "lapse", tmp_path), ttl_s=2.0, renew_s=0.3)
    try:
        with capture_logs() as logs:
            async with held_lease(config, "only") as lease:
                server.kill()
                await asyncio.sleep(config.coordinator.lease_ttl_s + 1.0)  # the outage outlasts the lease
                waiter = asyncio.create_task(lease.writable())
                await asyncio.sleep(0.5)
                assert not waiter.done()  # a write waits while the lease cannot be confirmed
                server = EmbeddedNatsServer(
                    NatsServerOptions(store_dir=tmp_path / "nats", port=ports[0], http_port=ports[1])
                ).start()
                await asyncio.wait_for(waiter, 30)
                assert lease.held and not lease.lost.is_set()
        assert [e for e in logs if e["event"] == "lease.reacquired"]
    finally:
        server.kill()


async def test_a_coordinator_whose_nats_went_away_still_stops_within_a_lease_term(tmp_path: Path) -> None:
    """`claw up` killed: nats-server and the coordinator are told to stop at once. A write of the
    coordinator's stop (the node registry's last persist) must not wait forever for a renewal."""
    server = EmbeddedNatsServer(NatsServerOptions(store_dir=tmp_path / "nats", port=0, http_port=0)).start()
    config = lease_config(make_config(server, "gone", tmp_path), ttl_s=2.0, renew_s=0.3)
    try:
        coordinator = await Coordinator.start(config)
        stop = asyncio.Event()
        runner = asyncio.create_task(coordinator.run(stop))
        try:
            await asyncio.wait_for(coordinator.ready.wait(), 30)
            server.kill()
            lease = coordinator._lease
            await eventually(lease.blocked_reason, timeout_s=30, what="the renewal overdue: a write would wait")
            coordinator.registry.observe(_beat("w1"))  # a change the stop's last persist must write
            stop.set()
            # It ends (before the fix it waited for a renewal forever), saying what it could not write.
            done, _ = await asyncio.wait([runner], timeout=3 * config.coordinator.lease_ttl_s + 10)
            assert runner in done, "the coordinator did not stop with NATS gone"
            error = runner.exception()
            assert error is None or (isinstance(error, LeaseLostError) and "before stopping" in str(error)), error
        finally:
            if not runner.done():
                runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    finally:
        server.kill()


def _beat(node_id: str) -> NodeHeartbeat:
    return NodeHeartbeat(
        node_id=node_id, hostname="h", pid=1, version="1", status=NodeStatus.ONLINE, skills=["echo"],
        capacity=4, running=0, interval_s=1.0, started_at=1.0, sent_at=time.time(),
    )  # fmt: skip
