"""Event triggers: messages on `<prefix>.trigger.>` and new artifacts under a name prefix.

**Subjects.** Trigger messages go to a stream of their own, `<PREFIX>_TRIGGERS` (limits retention,
file storage), so a message published while no coordinator runs (a restart, a lease changing hands)
is kept until one does. The coordinator reads it through a durable consumer with explicit acks and
acks a message only after every schedule it fires has recorded its fire; the fire id is
`schedule:<name>:subject-<stream sequence>`, so a message redelivered after a crash fires nothing twice.
A schedule listening on a subject fires once per message; a paused one lets its messages pass.

**Artifacts.** Each artifact trigger keeps a cursor in the database: the id of the last `artifacts`
row it looked at (at creation, the newest one, so only artifacts made afterwards fire it). Each look
fires the schedule for every newer row whose name starts with its prefix (fire id
`schedule:<name>:artifact-<row id>`) and then moves the cursor: a restart in between only repeats fires
that are deduplicated. Polling the table rather than listening to commits keeps this exact across
restarts (a listener's queue is in memory and drops the oldest commits when full).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js import api as js_api
from nats.js.errors import APIError

from common.clock import Clock
from common.config import JetStreamSettings
from common.errors import CommunicationError, ScheduleNotFoundError
from common.log import get_logger
from common.verbs import Role
from communication.connection import NatsConnection
from communication.pull import PullConsumer
from communication.topology import replicas_for
from coordinator.schedules.engine import FireRequest, Kind, ScheduleEngine, subject_matches
from coordinator.tenants.identity import DEFAULT_TENANT
from storage.schedule_store import ScheduleStore

log = get_logger("coordinator.schedules.triggers")

STREAM_NAME_IN_USE = 10058
TRIGGERS_MAX_AGE_S = 7 * 24 * 3600.0
# A message whose fire failed (NATS or the database away) comes back after this long.
TRIGGER_ACK_WAIT_S = 30.0
RETRY_DELAY_S = 1.0
# A trigger message is tried this many times (its fires failing on NATS or the database), then dropped.
MAX_DELIVERIES = 10
BATCH = 100
# At most this much of a trigger message's text is passed on when it is not JSON.
TEXT_CHARS = 16 * 1024


class SubjectTriggers:
    """Reads `<PREFIX>_TRIGGERS` and fires the schedules whose subject matches each message."""

    def __init__(
        self,
        conn: NatsConnection,
        settings: JetStreamSettings,
        engine: ScheduleEngine,
        roles_of: Callable[[str], Awaitable[frozenset[Role]]],
        tenant_of: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        """`roles_of` and `tenant_of` answer for a publisher's identity (the coordinator's authorizer)."""
        self._conn = conn
        self._settings = settings
        self._engine = engine
        self._roles_of = roles_of
        self._tenant_of = tenant_of
        self._consumer: PullConsumer | None = None

    async def ensure(self) -> PullConsumer:
        """The stream, the durable consumer and a puller on it (once)."""
        if self._consumer is not None:
            return self._consumer
        subjects, s = self._conn.subjects, self._settings
        config = js_api.StreamConfig(
            name=subjects.triggers_stream,
            description="events that fire schedules (claw schedules create --on-subject)",
            subjects=[subjects.triggers_all],
            retention=js_api.RetentionPolicy.LIMITS,
            storage=js_api.StorageType.FILE,
            num_replicas=replicas_for(s, self._conn),
            max_age=TRIGGERS_MAX_AGE_S,
            duplicate_window=min(s.duplicate_window_s, TRIGGERS_MAX_AGE_S),
        )
        try:
            await self._conn.js.add_stream(config)
        except APIError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            await self._conn.js.update_stream(config)
        await self._conn.js.add_consumer(
            subjects.triggers_stream,
            js_api.ConsumerConfig(
                durable_name=subjects.triggers_consumer,
                description="the coordinator fires schedules on trigger messages",
                filter_subject=subjects.triggers_all,
                deliver_policy=js_api.DeliverPolicy.ALL,
                ack_policy=js_api.AckPolicy.EXPLICIT,
                ack_wait=TRIGGER_ACK_WAIT_S,
                max_deliver=-1,
                num_replicas=replicas_for(s, self._conn),
            ),
        )
        consumer = PullConsumer(self._conn, subjects.triggers_stream, subjects.triggers_consumer)
        await consumer.start()
        self._consumer = consumer
        return consumer

    async def poll(self) -> None:
        """The periodic job: fire for every trigger message waiting, then ack it."""
        consumer = await self.ensure()
        while msgs := await self._fetch(consumer):
            for index, msg in enumerate(msgs):
                try:
                    if msg.metadata.num_delivered > MAX_DELIVERIES:
                        # A message that failed this often would hold up every later one: set aside.
                        log.error("schedules.trigger_dropped", subject=msg.subject, seq=msg.metadata.sequence.stream)
                    else:
                        await self._fire(msg)
                except BaseException:
                    for rest in msgs[index:]:  # come back soon, in order, rather than after the ack wait
                        await rest.nak(delay=RETRY_DELAY_S)
                    raise
                await msg.ack()
            if len(msgs) < BATCH:
                return

    async def _fetch(self, consumer: PullConsumer) -> list[Msg]:
        try:
            return await consumer.fetch_nowait(BATCH)
        except CommunicationError:
            # The consumer or its stream is gone (deleted by hand, a new server): made again next time.
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop pulling (messages in hand come back after the ack wait)."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _fire(self, msg: Msg) -> None:
        root = self._conn.subjects.trigger_root
        # `<prefix>.trigger.<identity>.<subject>`: the server binds the identity token to the
        # publisher's credentials (a client may publish only under its own).
        identity, _, subject = msg.subject.removeprefix(root).partition(".")
        seq = msg.metadata.sequence.stream
        if not subject:
            log.warning("schedules.trigger_without_identity", subject=msg.subject[:200], seq=seq)
            return
        event = {"source": "subject", "subject": subject, "seq": seq, "by": identity, "data": _data(msg.data)}
        roles: frozenset[Role] | None = None
        tenant: str | None = None
        for schedule in list((await self._engine.schedules()).values()):
            pattern = schedule.spec.on_subject
            if schedule.row.kind != Kind.SUBJECT or pattern is None or schedule.row.paused:
                continue
            if not subject_matches(pattern, subject):
                continue
            if roles is None:
                roles = await self._roles_of(identity)
                tenant = None if self._tenant_of is None else await self._tenant_of(identity)
            if not schedule.may_be_fired_by(identity, roles):
                log.warning(
                    "security.trigger_refused", schedule=schedule.name, identity=identity, subject=subject[:200],
                    seq=seq, owner=schedule.row.created_by,
                )  # fmt: skip
                continue
            if tenant is not None and tenant != (schedule.spec.tenant or DEFAULT_TENANT):
                # Bound to a tenant, its submits are that tenant's: a fire would start work for another.
                log.warning(
                    "security.trigger_refused", schedule=schedule.name, identity=identity, subject=subject[:200],
                    seq=seq, owner=schedule.row.created_by, tenant=tenant,
                    reason=f"bound to tenant {tenant}, the schedule fires for {schedule.spec.tenant or DEFAULT_TENANT}",
                )  # fmt: skip
                continue
            request = FireRequest(f"schedule:{schedule.name}:subject-{seq}", None, "subject", event, by=identity)
            await _fire_unless_deleted(self._engine, schedule.name, request)


class ArtifactTriggers:
    """Fires artifact-triggered schedules for each new artifact under their prefix."""

    def __init__(self, store: ScheduleStore, clock: Clock, engine: ScheduleEngine) -> None:
        self._store = store
        self._clock = clock
        self._engine = engine

    async def poll(self) -> None:
        """The periodic job: look at the artifacts made since each schedule's cursor."""
        for schedule in list((await self._engine.schedules()).values()):
            prefix = schedule.spec.on_artifact
            if schedule.row.kind != Kind.ARTIFACT or prefix is None or schedule.row.paused:
                continue
            await self._poll_one(schedule.name, prefix, schedule.row.artifact_cursor)

    async def _poll_one(self, name: str, prefix: str, cursor: int) -> None:
        own = f"schedule:{name}:"
        while True:
            rows = await self._store.new_artifacts(cursor, not_from=own, limit=BATCH)
            last = await self._store.max_artifact_id(cursor, limit=BATCH)
            for row_id, task_id, artifact, sha256, size in rows:
                if artifact.startswith(prefix):
                    event = {"source": "artifact", "task_id": task_id, "name": artifact, "sha256": sha256,
                             "size": size, "artifact_id": row_id}  # fmt: skip
                    request = FireRequest(f"{own}artifact-{row_id}", None, "artifact", event)
                    if not await _fire_unless_deleted(self._engine, name, request):
                        return
            if last == cursor:
                return
            await self._engine.move_cursor(name, last)
            cursor = last


async def _fire_unless_deleted(engine: ScheduleEngine, name: str, request: FireRequest) -> bool:
    """Fire; False when the schedule was deleted meanwhile (then there is nothing to fire)."""
    try:
        await engine.fire_event(name, request)
    except ScheduleNotFoundError:
        return False
    return True


def _data(raw: bytes) -> Any:
    """A trigger message's body: its JSON, else its text (shortened), else None when empty."""
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # anyone may publish here: bytes, or JSON nested too deep
        return raw[:TEXT_CHARS].decode("utf-8", errors="replace")
