"""The worker process: wires puller, runner, reporter and heartbeat together and owns their tasks.

Shutdown (on the `stop` event), in the order dramatiq and Temporal use: stop fetching; let running
tasks finish within `shutdown_grace_s` while progress acks keep their messages alive; cancel what is
still running (those nak, so another worker takes them at once); flush the event reporter;
deregister; close NATS.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from common.aio import wait_any
from common.clock import SYSTEM_CLOCK, Clock
from common.config import ClawConfig
from common.errors import ConfigError, NodeIdTakenOverError
from common.log import get_logger
from common.states import Priority
from communication.connection import NATS_ERRORS, NatsConnection
from communication.startup import StartupCalls
from communication.subjects import skill_from_token
from communication.topology import Topology
from storage.artifacts import ArtifactStore, open_artifact_store
from worker.cancellation import CancelledTasks
from worker.delivery_claims import ClaimReporter
from worker.execution import TaskRunner
from worker.flow import FlowClient
from worker.heartbeat import Heartbeat
from worker.node_control import NodeController
from worker.puller import Slots, TaskPuller
from worker.reporter import EventReporter
from worker.skill_sync import SkillSync
from worker.skills import SkillRegistry, builtin_registry

log = get_logger("worker")

NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def default_node_id() -> str:
    """`<hostname>-<pid>`, with characters that cannot be in a subject token replaced."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40]
    return f"{host}-{os.getpid()}"


class Worker:
    """A running worker; build it with `await Worker.start(config)`, then `run(stop)`."""

    def __init__(
        self,
        config: ClawConfig,
        conn: NatsConnection,
        topology: Topology,
        base_skills: SkillRegistry,
        heartbeat_kv: KeyValue,
        skills_kv: KeyValue,
        node_id: str,
        clock: Clock,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        settings = config.worker
        self.config = config
        self.node_id = node_id
        # The skills this worker runs now: its own, minus disabled ones, plus installed ones.
        self.skills = SkillRegistry()
        self.skill_sync = SkillSync(config, topology, skills_kv, base_skills, self.skills, clock)
        self._running_per_skill: Counter[str] = Counter()
        self._conn = conn
        self._clock = clock
        self.slots = Slots(settings.concurrency)
        self._running: dict[asyncio.Task[None], Msg] = {}
        self._threads = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="skill")
        self._reporter = EventReporter(conn)
        self._cancelled = CancelledTasks(self._stop_running)
        self._claims = ClaimReporter(conn, node_id)
        self.flow = FlowClient(
            conn,
            node_id,
            clock,
            cooldown_s=config.flow.cooldown_s,
            max_cooldown_s=config.flow.max_cooldown_s,
            cache_ttl_s=config.flow.cache_ttl_s,
        )
        self._runner = TaskRunner(
            conn=conn,
            node_id=node_id,
            skills=self.skills,
            reporter=self._reporter,
            clock=clock,
            threads=self._threads,
            cancelled=self._cancelled,
            retry_scheduled=self._retry_scheduled,
            artifacts=artifacts,
            inline_max_bytes=config.artifacts.inline_max_bytes,
            artifact_ttl_s=config.artifacts.default_ttl_s,
            started_event_delay_s=settings.started_event_delay_s,
            claims=self._claims,
            flow=self.flow,
        )
        self._artifacts = artifacts
        self._cancel_sub: Subscription | None = None
        self.puller = TaskPuller(
            conn, topology, [], self.slots, settings, clock, self._dispatch, skill_room=self._skill_room
        )
        self.node_control = NodeController(conn, node_id, self.puller, running=lambda: len(self._running))
        # Set once the worker pulls and beats: for whoever starts one in-process and must not race it.
        self.ready = asyncio.Event()
        self.heartbeat = Heartbeat(
            conn,
            heartbeat_kv,
            node_id=node_id,
            skills=self.skills.all,
            skill_loads=lambda: self.skill_sync.loads,
            labels=settings.labels,
            capacity=settings.concurrency,
            interval_s=settings.heartbeat_interval_s,
            running=lambda: len(self._running),
            status=self.node_control.status,
            control=lambda: self.node_control.control,
            clock=clock,
        )

    @classmethod
    async def start(
        cls, config: ClawConfig, *, skills: SkillRegistry | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> Worker:
        """Connect, set up streams and this worker's consumers, and register its skills."""
        node_id = config.worker.node_id or default_node_id()
        if not NODE_ID_PATTERN.match(node_id):
            raise ConfigError(f"node id '{node_id}' may only hold letters, digits, '-' and '_' (64 at most)")
        base = skills or builtin_registry(config)
        conn = await NatsConnection.connect(config.nats, name=f"claw-worker-{node_id}")
        try:
            topology = Topology(conn, config.jetstream)
            step = StartupCalls(config.nats.startup_deadline_s)
            await step("the JetStream streams", lambda: topology.ensure_streams(update=False))
            kv = await step("the nodes bucket", topology.nodes_kv)
            skills_kv = await step("the skills bucket", topology.skills_kv)
            artifacts = await open_artifact_store(config.artifacts)
            worker = cls(config, conn, topology, base, kv, skills_kv, node_id, clock, artifacts)
        except BaseException:
            await conn.close()
            raise
        # One live process per node id: claimed before anything is pulled, refused if it is taken.
        try:
            await step(
                "this node's registration",
                lambda: worker.heartbeat.acquire(missed_beats=config.coordinator.offline_after_missed_beats),
            )
        except BaseException:
            await worker._close_early(release=False)
            raise
        try:
            control_kv = await step("the node-control bucket", topology.node_control_kv)
            await step("this node's control state", lambda: worker.node_control.start(control_kv))
            await step("the skill store (installed skills)", worker.skill_sync.initial)
            await step("this worker's consumers", lambda: worker.puller.set_skills(worker.skills.names()))
            worker._cancel_sub = await conn.nc.subscribe(conn.subjects.cancel_all, cb=worker._cancelled.on_broadcast)
            await worker.flow.start()
            await conn.nc.flush()
        except BaseException:
            await worker._close_early(release=True)
            raise
        return worker

    async def _close_tools(self) -> None:
        """Close what skills keep open between calls: llm.chat's HTTP clients (one per tool and
        event loop, reused by every call)."""
        from worker.skills.tools.llm import close_clients  # imported on first use, as the tools are

        try:
            await close_clients()
        except Exception:
            log.exception("worker.tool_close_failed")

    async def _close_early(self, *, release: bool) -> None:
        """Undo a start that failed: free the node id if this process claimed it, close the rest."""
        try:
            if release:
                await self.heartbeat.release()
            await self.node_control.stop()
            await self.puller.stop()
            if self._artifacts is not None:
                await self._artifacts.close()
        finally:
            self._threads.shutdown(wait=False, cancel_futures=True)
            await self._conn.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then shut down gracefully and close the connection."""
        # Every line this worker logs (its loops and tasks inherit the context) names the node.
        structlog.contextvars.bind_contextvars(node_id=self.node_id)
        pulling = asyncio.Event()
        background = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._reporter.run(background), name="event-reporter")
                tg.create_task(self._claims.run(), name="delivery-claims")
                tg.create_task(self.heartbeat.run(background), name="heartbeat")
                tg.create_task(self._keep_alive(background), name="progress-acks")
                tg.create_task(self.puller.run(pulling), name="puller")
                tg.create_task(self.skill_sync.run(self.puller, background), name="skill-sync")
                self.ready.set()
                log.info(
                    "worker.ready",
                    node_id=self.node_id,
                    skills=self.skills.names(),
                    concurrency=self.slots.capacity,
                    labels=self.config.worker.labels,
                )
                await wait_any(stop, self.heartbeat.lost)
                log.info("worker.stopping", running=len(self._running))
                self.node_control.stopping = True
                pulling.set()
                await self._drain_running(self.config.worker.shutdown_grace_s)
                await self.heartbeat.deregister()
                self._claims.close()
                background.set()
        finally:
            if self._cancel_sub is not None:
                await self._cancel_sub.unsubscribe()
            await self.flow.stop()
            await self._close_tools()
            await self.node_control.stop()
            await self.puller.stop()
            self._threads.shutdown(wait=False, cancel_futures=True)
            if self._artifacts is not None:
                await self._artifacts.close()
            await self._conn.close()
        log.info("worker.stopped", node_id=self.node_id)
        if self.heartbeat.lost.is_set():
            raise NodeIdTakenOverError(
                f"node id '{self.node_id}' was taken over by another worker process while this one was "
                "frozen or cut off; this one stopped"
            )

    def _retry_scheduled(self, skill: str, priority: Priority, delay_s: float) -> None:
        self.puller.wake_later(skill, priority, delay_s)

    def _stop_running(self, task_id: str, reason: str) -> bool:
        return self._runner.cancel(task_id, reason)

    def _skill_room(self, skill: str) -> int | None:
        """How many more tasks of `skill` may start here (its manifest's concurrency); None: no limit."""
        found = self.skills.get(skill)
        limit = found.manifest.concurrency if found is not None and found.manifest is not None else None
        return None if limit is None else limit - self._running_per_skill[skill]

    def _dispatch(self, msg: Msg) -> None:
        """Start a fetched task in the slot the puller reserved for it."""
        task = asyncio.create_task(self._runner.execute(msg), name="task")
        self._running[task] = msg
        self._running_per_skill[skill_from_token(msg.subject.rsplit(".", 1)[-1])] += 1
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        msg = self._running.pop(task, None)
        if msg is not None:
            self._running_per_skill[skill_from_token(msg.subject.rsplit(".", 1)[-1])] -= 1
        self.slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("task.crashed", error=repr(task.exception()))

    async def _drain_running(self, grace_s: float) -> None:
        if not self._running:
            return
        _, pending = await asyncio.wait(list(self._running), timeout=grace_s)
        if pending:
            log.warning("worker.grace_expired", cancelled=len(pending), grace_s=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _keep_alive(self, stopping: asyncio.Event) -> None:
        """Progress acks (`in_progress`) for running tasks, so healthy long tasks are never redelivered."""
        interval_s = self.config.jetstream.ack_wait_s / 3
        while not await wait_any(stopping, timeout_s=interval_s):
            for msg in list(self._running.values()):
                try:
                    await msg.in_progress()
                except NATS_ERRORS as exc:
                    log.warning("task.progress_ack_failed", error=str(exc) or type(exc).__name__)
