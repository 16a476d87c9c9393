"""A worker's hold on its node id (its KV key): refused while a live process holds it, given up
(the worker stops) when another process took it over."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from nats.js.errors import KeyNotFoundError

from common.config import ClawConfig
from common.errors import NodeIdInUseError, NodeIdTakenOverError
from communication.codec import encode
from communication.connection import NatsConnection
from communication.topology import Topology
from tests.helpers import eventually, running_worker, worker_config
from worker.service import Worker


async def test_a_second_worker_with_the_id_of_a_live_one_is_refused(config: ClawConfig) -> None:
    w1 = worker_config(config, node_id="w1")
    async with running_worker(w1) as first:
        with pytest.raises(NodeIdInUseError, match=r"node id 'w1' is in use by a live worker \(pid \d+ on "):
            await Worker.start(w1)
        assert first.ready.is_set() and not first.heartbeat.lost.is_set()
    # A clean stop frees the id at once.
    async with running_worker(w1) as again:
        assert again.ready.is_set()


async def test_a_worker_whose_id_was_taken_over_stops_with_an_error(config: ClawConfig) -> None:
    """As if it had been frozen past the offline window and a new process had claimed its id."""
    worker = await Worker.start(worker_config(config, node_id="w1"))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await eventually(lambda: worker.ready.is_set(), what="the worker runs")
        conn = await NatsConnection.connect(config.nats, name="impostor")
        try:
            kv = await Topology(conn, config.jetstream).nodes_kv()
            entry = await kv.get("w1")
            beat = msgspec.json.decode(entry.value or b"{}")
            await kv.update("w1", encode(beat | {"instance_id": "another-process", "pid": 1}), last=entry.revision)
        finally:
            await conn.close()
        with pytest.raises(NodeIdTakenOverError, match="node id 'w1' was taken over by another worker process"):
            await asyncio.wait_for(running, 30)
    finally:
        stop.set()
        if not running.done():
            await asyncio.wait_for(running, 30)


async def test_a_beat_racing_the_deregistration_does_not_claim_the_id_again(config: ClawConfig) -> None:
    """The beat loop may still send once the worker deregistered (it stops a moment later): that beat
    is dropped. It must neither find the key gone and declare the id lost (the worker would then exit
    with NodeIdTakenOverError after a clean stop) nor create the key again."""
    async with running_worker(worker_config(config, node_id="w1")) as worker:
        await worker.heartbeat.deregister()
        await worker.heartbeat.send(worker.heartbeat.beat())
        assert not worker.heartbeat.lost.is_set()
        conn = await NatsConnection.connect(config.nats, name="observer")
        try:
            kv = await Topology(conn, config.jetstream).nodes_kv()
            with pytest.raises(KeyNotFoundError):
                await kv.get("w1")
        finally:
            await conn.close()
