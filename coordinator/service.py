"""The coordinator process: wires the parts together and owns their lifecycle.

Start-up: connect to NATS, take the prefix's lease (refused while another coordinator holds it:
`coordinator/lease.py`), create streams and the events consumer, open and migrate the database, load
the working set (unfinished tasks, node registry, active alerts), then serve metrics (when asked),
start the loops - the submit pipeline, event intake, the periodic jobs, the after-commit listeners -
and, last, the API, so no request is answered before the state behind it is loaded.

The constructor only wires: each part gets the parts it needs. What reacts to commits and what runs
on a timer is registered on the two hooks, `listeners` and `jobs`, by `register(coordinator)` of
each feature family (`FEATURES`, and the plugins given to `start`): coordinator/plugins.py.

Shutdown (on the `stop` event): stop taking API requests and let those in progress finish; then stop
the loops - the submit pipeline drains its queue, event intake commits and acks the batch in hand,
the running periodic jobs end - and checkpoint the log; the after-commit listeners get what is
still queued for them; the registry is persisted; then the lease is released and the metrics server,
the database and NATS are closed. A lost lease stops the coordinator at once instead, writing nothing
more (`LeaseLostError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from common.aio import wait_any
from common.clock import SYSTEM_CLOCK, Clock
from common.config import ClawConfig, CoordinatorSettings
from common.errors import LeaseLostError
from common.log import get_logger
from common.models import NodeHeartbeat, QueueDepth, ReplicationView, StorageFaultView
from communication.codec import DecodeError, decode
from communication.connection import NATS_ERRORS, NatsConnection
from communication.startup import StartupCalls
from communication.topology import Topology
from coordinator import flow, live_feed, maintenance, schedules, tenants, workflows
from coordinator.acting_proof import ActingProof
from coordinator.admission import Admission
from coordinator.alerts import AlertMonitor
from coordinator.api_handlers import ApiHandlers
from coordinator.api_routes import ApiRoutes
from coordinator.api_server import ApiServer
from coordinator.approvals import ApprovalDesk
from coordinator.artifact_cleanup import ArtifactJanitor
from coordinator.audit import Auditor
from coordinator.authorization import Authorizer
from coordinator.commit_listeners import CommitListeners
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
from coordinator.periodic_jobs import JobScheduler
from coordinator.plugins import CoordinatorPlugin
from coordinator.quarantine import QuarantineDesk
from coordinator.queue_probe import QueueProbe
from coordinator.restore_reconcile import reconcile_restored_queue
from coordinator.skill_catalog import SkillCatalog
from coordinator.standby import active as standby_active
from coordinator.standby.publisher import ReplicationPublisher
from coordinator.submission import SubmitPipeline
from coordinator.task_book import TaskBook
from coordinator.task_wire import default_backoff
from coordinator.workflows.engine import WorkflowEngine
from storage.artifact_index import ArtifactIndex
from storage.artifacts import ArtifactStore, open_artifact_store
from storage.audit_anchor import AnchorSigner, key_path
from storage.backup import restored_marker
from storage.database import Database
from storage.node_store import NodeStore
from storage.quarantine_store import QuarantineStore
from storage.skill_store import SkillStore
from storage.task_queries import TaskQueries
from storage.task_stats import TaskStatistics
from storage.task_writer import TaskWriter

log = get_logger("coordinator")

API_GRACE_S = 10.0
# The feature families every coordinator has; each adds its listeners and jobs (coordinator/plugins.py).
FEATURES: tuple[CoordinatorPlugin, ...] = (maintenance, tenants, flow, workflows, schedules, live_feed, standby_active)


@dataclass(frozen=True, slots=True)
class Buckets:
    """The KV buckets the coordinator writes, opened before it is built."""

    skills: KeyValue
    audit: KeyValue
    node_control: KeyValue
    # The HTTP credentials (read here to check what a gateway forwards; created here, written by admins).
    gateway_keys: KeyValue


class Coordinator:
    """A running coordinator; build it with `await Coordinator.start(config)`, then `run(stop)`."""

    # The workflow runner, set by the workflows feature (coordinator/workflows): `start_run(...)`.
    workflows: WorkflowEngine

    def __init__(
        self,
        config: ClawConfig,
        conn: NatsConnection,
        db: Database,
        topology: Topology,
        clock: Clock,
        *,
        buckets: Buckets,
        artifacts: ArtifactStore,
        lease: CoordinatorLease,
        audit_signer: AnchorSigner,
        plugins: Sequence[CoordinatorPlugin] = (),
        replication: ReplicationPublisher | None = None,
    ) -> None:
        settings = config.coordinator
        # Ships every commit to the standbys (coordinator/standby), when replication is on.
        self.replication = replication
        self.config, self.conn, self.db, self.clock = config, conn, db, clock
        self.node_id = lease.holder.node_id
        self._lease = lease
        db.set_fence(lease)
        # The two hooks (coordinator/plugins.py).
        self.listeners = CommitListeners()
        self.jobs = JobScheduler(clock, writable=lease.writable)
        # The state database, by reader; every commit goes to the listeners.
        self.writer = TaskWriter(db, audit_key=_audit_key(settings), quarantine_max_rows=settings.quarantine_max_rows)
        self.writer.on_commit = self.listeners.dispatch
        self.artifact_index = ArtifactIndex(db)
        self.queries = TaskQueries(db, self.artifact_index)
        self.stats = TaskStatistics(db)
        # Tasks, from submit to outcome.
        self.book = TaskBook(self.queries)
        self.pipeline = SubmitPipeline(
            conn,
            self.writer,
            self.queries,
            self.book,
            settings,
            clock,
            artifact_ttl_s=config.artifacts.default_ttl_s,
            write_blocked=lease.blocked_reason,
        )
        self.folder = EventFolder(self.book, dead_letter=settings.dead_letter)
        self.dead_letters = DeadLetterOffice(conn, self.queries, clock, default_backoff(settings))
        self.intake = EventIntake(
            conn, topology, self.writer, self.book, self.folder, self.dead_letters, clock,
            batch_max=settings.event_batch_max, listeners=self.listeners,
        )  # fmt: skip
        self.claims = ClaimBook(clock, keep_s=_claims_keep_s(config))
        self.operations = TaskOperations(
            conn, self.book, self.writer, self.pipeline, self.folder, clock, config, claims=self.claims
        )
        self.approvals = ApprovalDesk(
            self.book, self.writer, self.queries, self.pipeline, clock, self_approval=config.auth.self_approval
        )
        # Nodes, skills, the guard, the audit log, artifacts, monitoring.
        node_store = NodeStore(db)
        self.registry = NodeRegistry(node_store, clock, missed_beats=settings.offline_after_missed_beats)
        self.node_control = NodeControlDesk(conn, node_store, self.writer, self.registry, buckets.node_control, clock)
        self.catalog = SkillCatalog(SkillStore(db), self.writer, buckets.skills, clock, skill_code=topology.skill_code)
        self.guard = Guard(load_policy(settings.guard_policy))
        self.auditor = Auditor(self.writer, buckets.audit, audit_signer, clock)
        self.artifact_store = artifacts
        self.janitor = ArtifactJanitor(artifacts, self.artifact_index, clock, grace_s=config.artifacts.cleanup_grace_s)
        self.probe = QueueProbe(conn)
        self.alerts = AlertMonitor(self.writer, self.queries, self.stats, settings, clock)
        # Metrics cost nothing unless asked for: without a port there is no listener on the hot path.
        self.metrics = ClusterMetrics() if settings.metrics_port is not None else None
        self._metrics_server = None if self.metrics is None else MetricsServer(self.metrics.registry)
        # API handlers that plugins add (objects with `@serves` methods), served with the others.
        self.api_providers: list[object] = []
        for plugin in (*FEATURES, *plugins):
            plugin.register(self)
        self.authorizer = Authorizer(config.auth, clock, open_bus=not conn.auth_required)
        # A gateway's request is a person's only with their credential, checked here.
        proof = ActingProof(buckets.gateway_keys, config.nats.prefix)
        self._api = ApiServer(conn, self._api_routes(), self.authorizer, proof)
        self._heartbeat_sub: Subscription | None = None
        self._claims_sub: Subscription | None = None
        # Set once the API answers: for whoever starts a coordinator in-process and must not race it.
        self.ready = asyncio.Event()

    def _api_routes(self) -> ApiRoutes:
        """The handler of every API verb the coordinator answers."""
        admission = Admission(
            self.config.coordinator,
            self.clock,
            catalog=self.catalog,
            guard=self.guard,
            advertised=self.registry.advertised,
            online_skills=self.registry.online_skills,
        )
        handlers = ApiHandlers(
            config=self.config,
            node_id=self.node_id,
            conn=self.conn,
            admission=admission,
            pipeline=self.pipeline,
            store=self.queries,
            artifact_index=self.artifact_index,
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
            artifacts=self.artifact_store,
            node_control=self.node_control,
            jobs=self.jobs.views,
            listeners=self.listeners.views,
            storage_fault=self._storage_fault,
            replication=None if self.replication is None else self._replication_view,
        )
        # The handlers, for features that submit as the API does (schedules fire tasks through `submit`).
        self.handlers = handlers
        return ApiRoutes.of(handlers, QuarantineDesk(QuarantineStore(self.db)), *self.api_providers)

    @classmethod
    async def start(
        cls,
        config: ClawConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        plugins: Sequence[CoordinatorPlugin] = (),
        conn: NatsConnection | None = None,
        lease: CoordinatorLease | None = None,
        replication: ReplicationPublisher | None = None,
    ) -> Coordinator:
        """Connect, take the lease, set up JetStream, open the database and load the working set.

        A standby that took over passes its connection, lease and publisher (its epoch marker is in
        the stream, and its database holds every commit before it: coordinator/standby/runner.py).
        """
        if conn is None:
            conn = await NatsConnection.connect(config.nats, name="claw-coordinator")
        try:
            topology = Topology(conn, config.jetstream)
            if lease is None:
                node_id = config.coordinator.node_id or f"coordinator-{socket.gethostname()}-{os.getpid()}"
                now = clock.now()
                lease = await StartupCalls(config.nats.startup_deadline_s)(
                    "the coordinator lease",
                    lambda: CoordinatorLease.acquire(conn, topology, config.coordinator, node_id, now=now),
                )
        except BaseException:
            await conn.close()
            raise
        try:
            # The key that signs the audit anchors: beside the database, never in it (a bad mode stops the start).
            signer = await asyncio.to_thread(AnchorSigner.load_or_create, key_path(config.coordinator.db_path))
            buckets, artifacts, db = await _prepare(config, topology)
        except BaseException:
            await lease.release()
            await conn.close()
            raise
        try:
            # Before the first write: every commit from here on reaches the standbys.
            if replication is not None:
                db.set_shipper(replication)
            elif config.coordinator.replication:
                replication = await StartupCalls(config.nats.startup_deadline_s)(
                    "the replication stream", lambda: standby_active.start_replication(conn, config, lease, db)
                )
            coordinator = cls(
                config, conn, db, topology, clock,
                buckets=buckets, artifacts=artifacts, lease=lease, audit_signer=signer, plugins=plugins,
                replication=replication,
            )  # fmt: skip
            await coordinator._load()
            marker = restored_marker(config.coordinator.db_path)
            if marker.exists():
                await reconcile_restored_queue(conn, coordinator.book, coordinator.pipeline, marker)
        except BaseException:
            await lease.release()  # at once: a restart must not wait for it to lapse
            await artifacts.close()
            await db.close()
            await conn.close()
            raise
        return coordinator

    async def _load(self) -> None:
        """Load the working set: unfinished tasks, nodes and their controls, skills, firing alerts."""
        await self.book.load()
        await self.registry.load()
        await self.node_control.load()
        await self.catalog.load()
        await self.alerts.load()
        log.info(
            "coordinator.loaded",
            node_id=self.node_id,
            db=str(self.db.path),
            unfinished_tasks=len(self.book),
            nodes=len(self.registry.views()),
        )

    @property
    def metrics_port(self) -> int | None:
        """The port `/metrics` is served on (the one chosen when configured as 0); None when off."""
        return None if self._metrics_server is None else self._metrics_server.port

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then shut down in order and close everything."""
        structlog.contextvars.bind_contextvars(node_id=self.node_id)
        try:
            await self._serve_metrics()
            await self._serve(stop)
        except BaseExceptionGroup as group:
            lost = _first(group, LeaseLostError)
            if lost is None:
                raise
            raise lost from None  # one clear line for the CLI, not a group
        finally:
            await self._close()
        log.info("coordinator.stopped")

    async def _serve(self, stop: asyncio.Event) -> None:
        """The loops and the API, until `stop` (or a lost lease: then no draining, it would write)."""
        loops_stopping, listeners_stopping = asyncio.Event(), asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.listeners.run(listeners_stopping), name="after-commit-listeners")
            loops = [
                tg.create_task(self.pipeline.run(loops_stopping), name="submit-pipeline"),
                tg.create_task(self.intake.run(loops_stopping), name="event-intake"),
                tg.create_task(self.jobs.run(loops_stopping), name="periodic-jobs"),
            ]
            await self._subscribe()
            await self._api.start()
            self.ready.set()
            log.info(
                "coordinator.ready", node_id=self.node_id, prefix=self.conn.subjects.prefix,
                authentication=not self.authorizer.open_bus,
            )  # fmt: skip
            await wait_any(stop, self._lease.lost)
            self._lease.check()  # lost: the loops are cancelled where they are
            log.info("coordinator.stopping")
            # The drain's writes may wait out one lease term for a late renewal, not forever (NATS may
            # have stopped with the cluster: `claw up` killed, its children all told to stop at once).
            self._lease.stop_waiting_after(self.config.coordinator.lease_ttl_s)
            await self._api.stop(API_GRACE_S)
            loops_stopping.set()
            await asyncio.wait(loops)
            await self.db.checkpoint()  # after the last commit
            listeners_stopping.set()

    async def _subscribe(self) -> None:
        nc, subjects = self.conn.nc, self.conn.subjects
        self._heartbeat_sub = await nc.subscribe(subjects.heartbeat_all, cb=self._on_heartbeat)
        self._claims_sub = await nc.subscribe(subjects.claims_all, cb=self.claims.on_message)

    async def _serve_metrics(self) -> None:
        """Start the `/metrics` server (outside the task group: a port in use is one clear error)."""
        if self._metrics_server is None:
            return
        settings = self.config.coordinator
        await self.refresh_metrics()
        port = await self._metrics_server.start(settings.metrics_host, settings.metrics_port or 0)
        log.info("metrics.serving", host=settings.metrics_host, port=port, path="/metrics")

    async def _close(self) -> None:
        self._lease.stop_waiting_after(self.config.coordinator.lease_ttl_s)  # also after a failure
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
        await self.db.close()
        await self.conn.close()

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = decode(msg.data, NodeHeartbeat)
        except DecodeError as exc:
            log.warning("node.bad_heartbeat", subject=msg.subject, error=str(exc))
            return
        refusal = self._heartbeat_refusal(msg.subject, beat)
        if refusal is not None:
            log.warning("security.heartbeat_refused", node_id=beat.node_id, subject=msg.subject[:200], reason=refusal)
            return
        self.registry.observe(beat)
        await self.node_control.on_beat(beat)

    def _heartbeat_refusal(self, subject: str, beat: NodeHeartbeat) -> str | None:
        """Why a heartbeat is not believed (None: it is): it must come on its node's own subject (which
        the server binds to that worker's credentials) and announce an interval within bounds."""
        if subject.rsplit(".", 1)[-1] != beat.node_id:
            return f"a heartbeat for node {beat.node_id[:64]} on another node's subject"
        minimum = self.config.coordinator.min_heartbeat_interval_s
        if beat.interval_s < minimum:
            return f"interval {beat.interval_s:g} s is below the minimum of {minimum:g} s"
        return None

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
                updated_at=None if queues is None or dead_letters is None else self.clock.now(),
                queues=queues,
                dead_letters=dead_letters,
                storage_fault=self.db.fault is not None,
            )
        )

    async def _replication_view(self) -> ReplicationView | None:
        if self.replication is None:
            return None
        return await standby_active.replication_view(self.conn, self.config, self.replication)

    def _storage_fault(self) -> StorageFaultView | None:
        fault = self.db.fault
        return None if fault is None else StorageFaultView(reason=fault.reason, since=fault.since)


async def _prepare(config: ClawConfig, topology: Topology) -> tuple[Buckets, ArtifactStore, Database]:
    """Streams, consumer and buckets; the policy checked; the artifact store and the database opened."""
    step = StartupCalls(config.nats.startup_deadline_s)
    await step("the JetStream streams", topology.ensure_streams)
    await step("the events consumer", topology.ensure_events_consumer)
    await step("the nodes bucket", topology.nodes_kv)
    buckets = Buckets(
        skills=await step("the skills bucket", topology.skills_kv),
        audit=await step("the audit bucket", topology.audit_kv),
        node_control=await step("the node-control bucket", topology.node_control_kv),
        gateway_keys=await step("the gateway's keys bucket", topology.gateway_keys_kv),
    )
    await step("the gateway's sessions bucket", topology.gateway_sessions_kv)
    await step("the skill code store", topology.skill_code)
    load_policy(config.coordinator.guard_policy)  # a broken policy stops the start, with its reason
    artifacts = await open_artifact_store(config.artifacts)
    try:
        db = await Database.open(
            config.coordinator.db_path,
            synchronous=config.coordinator.sqlite_synchronous,
            own_checkpoints=True,
            check=config.coordinator.db_check,
        )
    except BaseException:
        await artifacts.close()
        raise
    return buckets, artifacts, db


def _audit_key(settings: CoordinatorSettings) -> bytes | None:
    """The key of the event log's HMAC chain, from the environment variable the config names."""
    key = os.environ.get(settings.audit_key_env)
    return key.encode() if key else None


def _claims_keep_s(config: ClawConfig) -> float:
    """How long delivery claims are kept: until a dead node is declared offline, and never past the
    ack wait, after which JetStream redelivers anyway."""
    detect_s = (config.coordinator.offline_after_missed_beats + 2) * config.worker.heartbeat_interval_s + 5.0
    return min(config.jetstream.ack_wait_s, detect_s)


def _first(group: BaseExceptionGroup[BaseException], kind: type[LeaseLostError]) -> LeaseLostError | None:
    """The first `kind` error in a (nested) exception group."""
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
    return None
