"""`jetstream.replicas` left at its default: three copies of every stream and bucket (the response
cache's too) on a NATS cluster, one on a single server; a count that is set is kept."""

from __future__ import annotations

import uuid
from pathlib import Path

from common.clock import SYSTEM_CLOCK
from common.config import JetStreamSettings, NatsSettings
from communication.connection import NatsConnection
from communication.nats_server import EmbeddedNatsServer
from communication.response_cache import ResponseCache
from communication.startup import StartupCalls
from communication.topology import Topology
from tests.helpers import eventually
from tests.nats_cluster import LocalNatsCluster


async def copies(url: str, settings: JetStreamSettings) -> int:
    """The replicas of the tasks stream a fresh prefix gets on the server at `url`."""
    nats = NatsSettings(url=url, prefix=f"t{uuid.uuid4().hex[:12]}", connect_retry_s=60)
    conn = await NatsConnection.connect(nats, name="replicas-test")
    try:
        # A fresh cluster elects its JetStream leaders in its first seconds: retried like the services do.
        await StartupCalls(60)("the streams", lambda: Topology(conn, settings).ensure_streams())
        info = await conn.js.stream_info(conn.subjects.tasks_stream)
        return int(info.config.num_replicas or 1)
    finally:
        await conn.close()


async def test_streams_get_three_copies_on_a_cluster_one_alone_and_a_set_count_is_kept(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    cluster = LocalNatsCluster(tmp_path / "nats").start()
    try:
        assert await copies(cluster.url, JetStreamSettings()) == 3
        assert await copies(cluster.url, JetStreamSettings(replicas=1)) == 1
        assert await copies(nats_server.client_url, JetStreamSettings()) == 1
    finally:
        cluster.stop()


async def cache_copies(url: str, settings: JetStreamSettings) -> int:
    """The replicas of the response-cache bucket the coordinator's first cached answer creates."""
    nats = NatsSettings(url=url, prefix=f"t{uuid.uuid4().hex[:12]}", connect_retry_s=60)
    conn = await NatsConnection.connect(nats, name="replicas-test")
    try:
        cache = ResponseCache(conn, SYSTEM_CLOCK, writer=settings)

        async def stored() -> bool:
            # put() takes a failed write (a fresh cluster still electing leaders) as a miss to come.
            await cache.put("k" * 64, {"answer": 1}, 60)
            return (await cache.stats())[0] == 1

        await eventually(stored, timeout_s=60, what="the first cached answer")
        info = await conn.js.stream_info(f"KV_{cache.bucket}")
        return int(info.config.num_replicas or 1)
    finally:
        await conn.close()


async def test_the_response_cache_bucket_gets_the_replicas_of_every_other_bucket(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    cluster = LocalNatsCluster(tmp_path / "nats").start()
    try:
        assert await cache_copies(cluster.url, JetStreamSettings()) == 3
        assert await cache_copies(cluster.url, JetStreamSettings(replicas=1)) == 1
        assert await cache_copies(nats_server.client_url, JetStreamSettings()) == 1
    finally:
        cluster.stop()
