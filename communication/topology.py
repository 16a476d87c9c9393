"""Idempotent set-up of the cluster's streams, consumers and KV bucket.

Every process calls these at start-up; creating what exists with the same config is a no-op, and a
changed setting (say a longer ack wait) is applied with an update. Consumers that many workers share
are never given an `inactive_threshold`: an idle durable would otherwise be deleted (JETSTREAM.md).
On an authenticated server only the coordinator creates streams and buckets; a worker that starts
first waits for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.js import api
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from common.clock import SYSTEM_CLOCK
from common.config import JetStreamSettings
from common.errors import NatsServerError
from common.log import get_logger
from common.states import PRIORITIES, Priority
from communication.connection import NatsConnection

log = get_logger("communication.topology")

T = TypeVar("T")

STREAM_NAME_IN_USE = 10058
# How long a worker waits for the coordinator to create what it may not create itself.
WAIT_FOR_COORDINATOR_S = 120.0
WAIT_POLL_S = 0.25
NODES_BUCKET_TTL_S = 24 * 3600.0
# How many anchors KV `<prefix>_audit` keeps: `claw audit verify` checks that they only moved forward.
AUDIT_HISTORY = 64


def replicas_for(settings: JetStreamSettings, conn: NatsConnection) -> int:
    """The copies a new stream or bucket gets: `jetstream.replicas`, else the server's default (3 on a
    NATS cluster, 1 alone)."""
    return settings.replicas or conn.default_replicas


class Topology:
    """Creates (or updates) what the cluster needs in JetStream; remembers what it already did."""

    def __init__(self, conn: NatsConnection, settings: JetStreamSettings) -> None:
        self._conn = conn
        self._settings = settings
        self._subjects = conn.subjects
        self._known_consumers: set[str] = set()

    async def ensure_streams(self, *, update: bool = True) -> None:
        """The task work queue, the event log and the dead-letter stream.

        With `update=False` (workers) an existing stream is left as it is: the coordinator owns the
        stream settings, so a worker with an older config cannot flip them back and forth.
        """
        s, js = self._settings, self._subjects
        await self._ensure_stream(
            api.StreamConfig(
                name=js.tasks_stream,
                description="queued tasks, one subject per (priority, skill)",
                subjects=[js.tasks_all],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                num_replicas=replicas_for(s, self._conn),
                duplicate_window=s.duplicate_window_s,
                # A backstop behind the coordinator's own per-skill queue limit: never silently drop,
                # refuse new messages on a full subject instead.
                max_msgs_per_subject=s.tasks_max_per_subject,
                discard=api.DiscardPolicy.NEW,
                discard_new_per_subject=True,
            ),
            update=update,
        )
        await self._ensure_stream(
            api.StreamConfig(
                name=js.events_stream,
                description="task events reported by workers",
                subjects=[js.events_all],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                num_replicas=replicas_for(s, self._conn),
                max_age=s.events_max_age_s,
                duplicate_window=min(s.duplicate_window_s, s.events_max_age_s),
            ),
            update=update,
        )
        await self._ensure_stream(
            api.StreamConfig(
                name=js.dlq_stream,
                description="dead-lettered tasks",
                subjects=[js.dlq_all],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                num_replicas=replicas_for(s, self._conn),
                max_age=s.dlq_max_age_s,
                duplicate_window=min(s.duplicate_window_s, s.dlq_max_age_s),
            ),
            update=update,
        )

    async def nodes_kv(self) -> KeyValue:
        """The KV bucket holding each node's last heartbeat (created if missing)."""
        bucket = self._subjects.nodes_bucket
        try:
            return await self._conn.js.key_value(bucket)
        except BucketNotFoundError:
            if not self._may_create:
                return await self._wait_for(bucket, lambda: self._conn.js.key_value(bucket))
            return await self._conn.js.create_key_value(
                bucket=bucket,
                description="last heartbeat of each worker node",
                history=1,
                ttl=NODES_BUCKET_TTL_S,
                storage=api.StorageType.FILE,
                replicas=replicas_for(self._settings, self._conn),
            )

    async def kv(self, bucket: str, description: str) -> KeyValue:
        """A KV bucket of the cluster (created if missing), one value per key."""
        try:
            return await self._conn.js.key_value(bucket)
        except BucketNotFoundError:
            if not self._may_create:
                return await self._wait_for(bucket, lambda: self._conn.js.key_value(bucket))
            return await self._conn.js.create_key_value(
                bucket=bucket,
                description=description,
                history=1,
                storage=api.StorageType.FILE,
                replicas=replicas_for(self._settings, self._conn),
            )

    async def lease_kv(self, ttl_s: float) -> tuple[KeyValue, str]:
        """The coordinator's lease bucket, whose entries expire `ttl_s` after their last write, and
        the name of its stream (its last sequence tells whether anyone wrote since)."""
        bucket = self._subjects.coordinator_bucket
        stream = f"KV_{bucket}"
        try:
            kv = await self._conn.js.key_value(bucket)
        except BucketNotFoundError:
            kv = await self._conn.js.create_key_value(
                bucket=bucket,
                description="the coordinator's lease on this prefix",
                history=1,
                ttl=ttl_s,
                storage=api.StorageType.FILE,
                replicas=replicas_for(self._settings, self._conn),
            )
        config = (await self._conn.js.stream_info(stream)).config
        if config.max_age is None or abs(config.max_age - ttl_s) > 1e-3:
            log.info("jetstream.lease_ttl_changed", bucket=bucket, ttl_s=ttl_s)
            config.max_age = ttl_s
            await self._conn.js.update_stream(config)
        return kv, stream

    async def gateway_keys_kv(self) -> KeyValue:
        """The HTTP credentials (communication/http_credentials.py): the coordinator creates the bucket,
        admins write it, gateways only read it."""
        return await self.kv(
            self._subjects.gateway_keys_bucket, "HTTP credentials: API keys (hashed), token records, the token key"
        )

    async def gateway_sessions_kv(self) -> KeyValue:
        """The dashboard's session secret (gateway/sessions.py): the coordinator creates the bucket."""
        return await self.kv(self._subjects.gateway_sessions_bucket, "the HTTP gateway's session secret")

    async def skills_kv(self) -> KeyValue:
        """The skill registry snapshot workers read."""
        return await self.kv(self._subjects.skills_bucket, "the skill registry: what workers load")

    async def node_control_kv(self) -> KeyValue:
        """The desired state of each node, which a starting worker reads (the coordinator writes it)."""
        return await self.kv(self._subjects.node_control_bucket, "desired state of each node: active, paused, drained")

    async def audit_kv(self) -> KeyValue:
        """Where the event log's chain head is anchored, keeping the last `AUDIT_HISTORY` anchors
        (a bucket made with less history, by an older version, is raised to it)."""
        bucket = self._subjects.audit_bucket
        try:
            kv = await self._conn.js.key_value(bucket)
        except BucketNotFoundError:
            return await self._conn.js.create_key_value(
                bucket=bucket,
                description="signed anchors of the event log's hash chain (trust-audit)",
                history=AUDIT_HISTORY,
                storage=api.StorageType.FILE,
                replicas=replicas_for(self._settings, self._conn),
            )
        config = (await self._conn.js.stream_info(f"KV_{bucket}")).config
        if (config.max_msgs_per_subject or 0) < AUDIT_HISTORY:
            log.info("jetstream.audit_history_raised", bucket=bucket, history=AUDIT_HISTORY)
            config.max_msgs_per_subject = AUDIT_HISTORY
            await self._conn.js.update_stream(config)
        return kv

    async def skill_code(self) -> ObjectStore:
        """The object store with installed skills' files (created if missing)."""
        bucket = self._subjects.skill_code_bucket
        try:
            return await self._conn.js.object_store(bucket)
        except BucketNotFoundError:
            if not self._may_create:
                return await self._wait_for(bucket, lambda: self._conn.js.object_store(bucket))
            return await self._conn.js.create_object_store(
                bucket=bucket,
                config=api.ObjectStoreConfig(
                    description="installed skills' files, one tar.gz per name@version",
                    storage=api.StorageType.FILE,
                    replicas=replicas_for(self._settings, self._conn),
                ),
            )

    async def ensure_task_consumers(self, skill: str) -> None:
        """The three durable pull consumers (one per priority) of `skill`."""
        for priority in PRIORITIES:
            await self.ensure_task_consumer(skill, priority)

    async def ensure_task_consumer(self, skill: str, priority: Priority) -> str:
        """One (skill, priority) consumer; returns its name."""
        name = self._subjects.task_consumer(skill, priority)
        if name in self._known_consumers:
            return name
        await self._conn.js.add_consumer(
            self._subjects.tasks_stream,
            api.ConsumerConfig(
                # `name` as well: nats-py then sends the create that names the filter subject in the API
                # subject, the one a worker bound to a skill set may send (communication/auth_config.py).
                name=name,
                durable_name=name,
                description=f"{priority.value}-priority tasks of skill {skill}",
                filter_subject=self._subjects.task(priority, skill),
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self._settings.ack_wait_s,
                max_deliver=-1,
                max_ack_pending=self._settings.max_ack_pending,
                num_replicas=replicas_for(self._settings, self._conn),
            ),
        )
        self._known_consumers.add(name)
        return name

    def forget_consumer(self, skill: str, priority: Priority) -> None:
        """Make the next `ensure_task_consumer` create the consumer again (it vanished)."""
        self._known_consumers.discard(self._subjects.task_consumer(skill, priority))

    async def ensure_events_consumer(self) -> str:
        """The coordinator's durable consumer on every task event.

        Explicit acks, not AckAll: after a coordinator crash, the events it had been delivered but
        not committed wait for redelivery, and an AckAll ack of a newer event by the next coordinator
        would acknowledge them unread - losing them.
        """
        name = self._subjects.events_consumer
        await self._conn.js.add_consumer(
            self._subjects.events_stream,
            api.ConsumerConfig(
                durable_name=name,
                description="the coordinator folds task events into SQLite",
                filter_subject=self._subjects.events_all,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                # Short: the coordinator acks within milliseconds of commit, and after a coordinator
                # crash this is how long the events it held wait before the next one gets them.
                ack_wait=self._settings.events_ack_wait_s,
                max_deliver=-1,
                max_ack_pending=self._settings.max_ack_pending,
                num_replicas=replicas_for(self._settings, self._conn),
            ),
        )
        return name

    @property
    def _may_create(self) -> bool:
        """Whether this connection may create streams and buckets: on an authenticated server only the
        coordinator may (a worker, client or gateway waits for it to: it creates the gateway's buckets
        too, so a gateway's credentials can make none)."""
        return not self._conn.auth_required or self._conn.identity_is_coordinator

    async def _wait_for(self, name: str, lookup: Callable[[], Awaitable[T]]) -> T:
        """Wait (up to WAIT_FOR_COORDINATOR_S) for the coordinator to create `name`."""
        log.warning("jetstream.waiting_for_coordinator", name=name)
        deadline = SYSTEM_CLOCK.monotonic() + WAIT_FOR_COORDINATOR_S
        while True:
            await asyncio.sleep(WAIT_POLL_S)
            try:
                return await lookup()
            except (BucketNotFoundError, NotFoundError):
                if SYSTEM_CLOCK.monotonic() > deadline:
                    raise NatsServerError(
                        f"{name} does not exist and these credentials may not create it: start the coordinator "
                        "first (`claw coordinator start`), which creates the cluster's streams and buckets"
                    ) from None

    async def _ensure_stream(self, config: api.StreamConfig, *, update: bool) -> None:
        if not update:
            # A worker only looks: on an authenticated server it may not create streams (the
            # coordinator does), and an existing stream is all it needs.
            try:
                await self._conn.js.stream_info(config.name or "")
                return
            except NotFoundError:
                if not self._may_create:
                    await self._wait_for(config.name or "", lambda: self._conn.js.stream_info(config.name or ""))
                    return
        try:
            await self._conn.js.add_stream(config)
        except APIError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            if not update:
                return
            log.info("jetstream.stream_updated", stream=config.name)
            await self._conn.js.update_stream(config)
