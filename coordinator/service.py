"""The coordinator process: wires the parts together and owns their lifecycle.

Start-up: connect to NATS, take the prefix's lease (refused while another coordinator holds it:
`coordinator/lease.py`), create streams and the events consumer, open and migrate the database, load
the working set (unfinished tasks, node registry, active alerts), then serve metrics (when asked),
start the loops and, last, the API - so no request is answered before the state behind it is loaded.

Shutdown (on the `stop` event): stop taking API requests and let those in progress finish; then stop
the loops - the submit pipeline drains its queue, event intake commits and acks the batch in hand,
the registry is persisted; then the lease is released and the metrics server, the database and NATS
are closed. A lost lease stops the coordinator at once instead, writing nothing more (`LeaseLostError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from common.aio import wait_any
from common.clock import SYSTEM_CLOCK, Clock
from common.config import ClawConfig
from common.errors import LeaseLostError, StorageError
from common.log import get_logger
from common.models import NodeHeartbeat, QueueDepth
from communication.codec import DecodeError, decode
from communication.connection import NATS_ERRORS, NatsConnection
from communication.topology import Topology
from coordinator.admission import Admission
from coordinator.alerts import AlertMonitor
from coordinator.api_handlers import ApiHandlers
from coordinator.api_routes import ApiRoutes
from coordinator.api_server import ApiServer
from coordinator.approvals import ApprovalDesk
from coordinator.artifact_cleanup import ArtifactJanitor
from coordinator.audit import Auditor
from coordinator.dead_letters import DeadLetterOffice
from coordinator.delivery_claims import ClaimBook
from coordinator.event_folding import EventFolder
from coordinator.event_intake import EventIntake
from coordinator.guard import Guard, load_policy
from coordinator.lease import CoordinatorLease
from coordinator.metrics import ClusterMetrics, GaugeValues, MetricsServer
from coordinator.node_control import NodeControlDesk
from coordinator.node_registry import NodeRegistry
from coordinator.operations import TaskOperations
from coordinator.quarantine import QuarantineDesk
from coordinator.queue_probe import QueueProbe
from coordinator.skill_catalog import SkillCatalog
from coordinator.submission import SubmitPipeline
from coordinator.task_book import TaskBook
from coordinator.task_wire import default_backoff
from storage.artifacts import ArtifactStore, open_artifact_store
from storage.database import Database
from storage.node_store import NodeStore
from storage.quarantine_store import QuarantineStore
from storage.skill_store import SkillStore
from storage.task_store import TaskStore

log = get_logger("coordinator")

MAINTENANCE_INTERVAL_S = 0.25
# A loop of its own, so that a long maintenance step (an orphan sweep) never lets the log grow.
CHECKPOINT_INTERVAL_S = 1.0
RECOVERY_INTERVAL_S = 5.0
API_GRACE_S = 10.0


class Coordinator:
    """A running coordinator; build it with `await Coordinator.start(config)`, then `run(stop)`."""

    def __init__(
        self,
        config: ClawConfig,
        conn: NatsConnection,
        db: Database,
        topology: Topology,
        clock: Clock,
        *,
        skills_kv: KeyValue,
        audit_kv: KeyValue,
        artifacts: ArtifactStore,
        node_control_kv: KeyValue,
        lease: CoordinatorLease,
    ) -> None:
        self.config = config
        self.node_id = lease.holder.node_id
        self._lease = lease
        db.set_fence(lease)
        self._conn = conn
        self._db = db
        self._clock = clock
        settings = config.coordinator
        audit_key = os.environ.get(settings.audit_key_env)
        self.store = TaskStore(
            db, audit_key=audit_key.encode() if audit_key else None, quarantine_max_rows=settings.quarantine_max_rows
        )
        # Metrics cost nothing unless asked for: without a port there is no observer on the hot path.
        self.metrics = ClusterMetrics() if settings.metrics_port is not None else None
        self._metrics_server = None if self.metrics is None else MetricsServer(self.metrics.registry)
        observer = None if self.metrics is None else self.metrics.observe_transition
        self.book = TaskBook(self.store, on_transition=observer)
        self.probe = QueueProbe(conn)
        self.alerts = AlertMonitor(self.store, settings, clock)
        node_store = NodeStore(db)
        self.registry = NodeRegistry(node_store, clock, missed_beats=settings.offline_after_missed_beats)
        self.node_control = NodeControlDesk(conn, node_store, self.store, self.registry, node_control_kv, clock)
        self.pipeline = SubmitPipeline(
            conn, self.store, self.book, settings, clock, artifact_ttl_s=config.artifacts.default_ttl_s
        )
        folder = EventFolder(self.book, dead_letter=settings.dead_letter)
        self.dead_letters = DeadLetterOffice(conn, self.store, clock, default_backoff(settings))
        self._intake = EventIntake(
            conn, topology, self.store, self.book, folder, self.dead_letters, clock, batch_max=settings.event_batch_max
        )
        # Claims matter until a dead node is declared offline; past the ack wait JetStream redelivers anyway.
        detect_s = (config.coordinator.offline_after_missed_beats + 2) * config.worker.heartbeat_interval_s + 5.0
        self.claims = ClaimBook(clock, keep_s=min(config.jetstream.ack_wait_s, detect_s))
        self.operations = TaskOperations(
            conn, self.book, self.store, self.pipeline, folder, clock, config, claims=self.claims
        )
        self.catalog = SkillCatalog(SkillStore(db), self.store, skills_kv, clock)
        self.guard = Guard(load_policy(settings.guard_policy))
        self.approvals = ApprovalDesk(self.book, self.store, self.pipeline, clock)
        self.auditor = Auditor(self.store, audit_kv)
        self.artifact_store = artifacts
        self.janitor = ArtifactJanitor(artifacts, self.store, clock, grace_s=config.artifacts.cleanup_grace_s)
        admission = Admission(
            settings,
            clock,
            catalog=self.catalog,
            guard=self.guard,
            advertised=self.registry.advertised,
            online_skills=self.registry.online_skills,
        )
        handlers = ApiHandlers(
            config=config,
            node_id=self.node_id,
            conn=conn,
            admission=admission,
            pipeline=self.pipeline,
            store=self.store,
            book=self.book,
            registry=self.registry,
            operations=self.operations,
            dead_letters=self.dead_letters,
            catalog=self.catalog,
            approvals=self.approvals,
            auditor=self.auditor,
            probe=self.probe,
            alerts=self.alerts,
            metrics_port=lambda: self.metrics_port,
            artifacts=artifacts,
            node_control=self.node_control,
        )
        quarantine = QuarantineDesk(QuarantineStore(db))
        self._api = ApiServer(conn, ApiRoutes.of(handlers, quarantine))
        self._heartbeat_sub: Subscription | None = None
        self._claims_sub: Subscription | None = None
        self._next_alerts_at = self._next_gauges_at = 0.0
        # Set once the API answers: for whoever starts a coordinator in-process and must not race it.
        self.ready = asyncio.Event()

    @classmethod
    async def start(cls, config: ClawConfig, *, clock: Clock = SYSTEM_CLOCK) -> Coordinator:
        """Connect, take the lease, set up JetStream, open the database and load the working set."""
        conn = await NatsConnection.connect(config.nats, name="claw-coordinator")
        try:
            topology = Topology(conn, config.jetstream)
            node_id = config.coordinator.node_id or f"coordinator-{socket.gethostname()}-{os.getpid()}"
            lease = await CoordinatorLease.acquire(conn, topology, config.coordinator, node_id, now=clock.now())
        except BaseException:
            await conn.close()
            raise
        try:
            await topology.ensure_streams()
            await topology.ensure_events_consumer()
            await topology.nodes_kv()
            skills_kv = await topology.skills_kv()
            audit_kv = await topology.audit_kv()
            node_control_kv = await topology.node_control_kv()
            await topology.skill_code()
            load_policy(config.coordinator.guard_policy)  # a broken policy stops the start, with its reason
            artifacts = await open_artifact_store(config.artifacts)
            db = await Database.open(
                config.coordinator.db_path, synchronous=config.coordinator.sqlite_synchronous, own_checkpoints=True
            )
        except BaseException:
            await lease.release()
            await conn.close()
            raise
        coordinator = cls(
            config,
            conn,
            db,
            topology,
            clock,
            skills_kv=skills_kv,
            audit_kv=audit_kv,
            artifacts=artifacts,
            node_control_kv=node_control_kv,
            lease=lease,
        )
        try:
            await coordinator.book.load()
            await coordinator.registry.load()
            await coordinator.node_control.load()
            await coordinator.catalog.load()
            await coordinator.alerts.load()
        except BaseException:
            await lease.release()  # at once: a restart must not wait for it to lapse
            await artifacts.close()
            await db.close()
            await conn.close()
            raise
        log.info(
            "coordinator.loaded",
            node_id=coordinator.node_id,
            db=str(db.path),
            unfinished_tasks=len(coordinator.book),
            nodes=len(coordinator.registry.views()),
        )
        return coordinator

    @property
    def metrics_port(self) -> int | None:
        """The port `/metrics` is served on (the one chosen when configured as 0); None when off."""
        return None if self._metrics_server is None else self._metrics_server.port

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then shut down in order and close everything."""
        structlog.contextvars.bind_contextvars(node_id=self.node_id)
        loops_stopping = asyncio.Event()
        try:
            await self._serve_metrics()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.pipeline.run(loops_stopping), name="submit-pipeline")
                tg.create_task(self._intake.run(loops_stopping), name="event-intake")
                tg.create_task(self._maintain(loops_stopping), name="maintenance")
                tg.create_task(self._checkpoints(loops_stopping), name="wal-checkpoints")
                self._heartbeat_sub = await self._conn.nc.subscribe(
                    self._conn.subjects.heartbeat_all, cb=self._on_heartbeat
                )
                self._claims_sub = await self._conn.nc.subscribe(
                    self._conn.subjects.claims_all, cb=self.claims.on_message
                )
                await self._api.start()
                self.ready.set()
                log.info("coordinator.ready", node_id=self.node_id, prefix=self._conn.subjects.prefix)
                await wait_any(stop, self._lease.lost)
                # A lost lease: no draining (it would write); the loops are cancelled where they are.
                self._lease.check()
                log.info("coordinator.stopping")
                await self._api.stop(API_GRACE_S)
                loops_stopping.set()
        except BaseExceptionGroup as group:
            lost = group.subgroup(LeaseLostError)
            if lost is None:
                raise
            raise lost.exceptions[0] from None  # one clear line for the CLI, not a group
        finally:
            await self._close()
        log.info("coordinator.stopped")

    async def _serve_metrics(self) -> None:
        """Start the `/metrics` server (outside the task group: a port in use is one clear error)."""
        if self._metrics_server is None:
            return
        settings = self.config.coordinator
        await self.refresh_metrics()
        port = await self._metrics_server.start(settings.metrics_host, settings.metrics_port or 0)
        log.info("metrics.serving", host=settings.metrics_host, port=port, path="/metrics")

    async def _close(self) -> None:
        await self._api.stop(0)  # already stopped unless the loops failed
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        for sub in (self._heartbeat_sub, self._claims_sub):
            if sub is not None:
                await sub.unsubscribe()
        self._heartbeat_sub = self._claims_sub = None
        if self._lease.held:
            with contextlib.suppress(LeaseLostError):  # lost just now: heartbeats rebuild the registry
                await self.registry.persist()
        await self._lease.release()
        await self.artifact_store.close()
        await self._db.close()
        await self._conn.close()

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = decode(msg.data, NodeHeartbeat)
        except DecodeError as exc:
            log.warning("node.bad_heartbeat", subject=msg.subject, error=str(exc))
            return
        self.registry.observe(beat)
        await self.node_control.on_beat(beat)

    async def _checkpoints(self, stopping: asyncio.Event) -> None:
        """Checkpoint the state database's write-ahead log every second (commits never do)."""
        while not await wait_any(stopping, timeout_s=CHECKPOINT_INTERVAL_S):
            await self._db.checkpoint()
        await self._db.checkpoint()

    async def _maintain(self, stopping: asyncio.Event) -> None:
        """Node liveness and reclaim, registry persistence, recovery of stuck tasks, alerts, gauges."""
        republish_every = self.config.coordinator.republish_after_s / 2
        next_republish = next_recovery = next_cleanup = self._clock.monotonic()
        orphan_every = self.config.artifacts.orphan_sweep_interval_s
        next_orphan_sweep = next_cleanup + orphan_every  # listing the store is not a startup job
        reconnects = self._conn.reconnects
        while not stopping.is_set():
            # Nothing of what follows may act on a state another coordinator may have moved on from.
            await self._lease.writable()
            if self._conn.reconnects != reconnects:
                # We were cut off, not the workers: their beats could not reach us meanwhile.
                reconnects = self._conn.reconnects
                self.registry.grace()
            for node in self.registry.sweep():
                if self.config.coordinator.reclaim_on_node_loss:
                    await self.operations.reclaim_node(node.node_id)
            try:
                await self.registry.persist()
            except StorageError as exc:
                log.error("nodes.persist_failed", error=str(exc))
            now = self._clock.monotonic()
            if now >= next_republish:
                await self.pipeline.republish_pending()
                next_republish = now + republish_every
            if now >= next_recovery:
                await self.operations.recover_lost_messages()
                await self.approvals.expire()
                await self.auditor.anchor()
                next_recovery = now + RECOVERY_INTERVAL_S
            if now >= next_cleanup:
                await self.janitor.sweep()
                next_cleanup = now + self.config.artifacts.cleanup_interval_s
            if orphan_every and now >= next_orphan_sweep:
                await self.janitor.sweep_orphans()
                next_orphan_sweep = now + orphan_every
            await self._observe(now)
            await wait_any(stopping, timeout_s=MAINTENANCE_INTERVAL_S)

    async def _observe(self, now: float) -> None:
        """Judge the alerts every `alert_interval_s`; refresh the gauges every `metrics_refresh_s`."""
        settings = self.config.coordinator
        if now >= self._next_alerts_at:
            await self.alerts.evaluate()
            self._next_alerts_at = now + settings.alert_interval_s
        if self.metrics is not None and now >= self._next_gauges_at:
            await self.refresh_metrics()
            self._next_gauges_at = now + settings.metrics_refresh_s

    async def refresh_metrics(self) -> None:
        """Read the gauges' values here, on the event loop, and set them: a scrape only reads numbers."""
        if self.metrics is None:
            return
        queues: list[QueueDepth] | None = None
        dead_letters: int | None = None
        try:
            queues = await self.probe.depths(self.registry.known_skills())
            dead_letters = await self.probe.dead_letters()
        except NATS_ERRORS as exc:
            # The JetStream gauges keep their last values, and so does their timestamp: a dashboard
            # can tell they are stale.
            log.warning("metrics.refresh_failed", error=str(exc))
        self.metrics.set_gauges(
            GaugeValues(
                tasks_by_state=self.book.counts(),
                nodes_online=self.registry.online_count(),
                alerts=self.alerts.firing(),
                updated_at=None if queues is None or dead_letters is None else self._clock.now(),
                queues=queues,
                dead_letters=dead_letters,
            )
        )
