"""Heartbeats: the worker's periodic self-report (core NATS for the coordinator, KV for anyone).

A beat carries what the registry shows (`claw nodes`): skills, labels, capacity and running tasks,
CPU, memory and load from psutil. Reading psutil's counters is a few /proc reads, not a blocking wait
(`cpu_percent(interval=None)` compares with the previous call).

The KV write is also the worker's hold on its node id (`NodeLease`): the first beat claims the id,
every later one renews the claim, and a beat that finds the id taken over sets `lost`.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

import psutil
from nats.js.kv import KeyValue

from common import __version__
from common.aio import wait_any
from common.clock import Clock
from common.ids import new_id
from common.log import get_logger
from common.models import NodeHeartbeat, SkillLoad
from common.states import NodeControl, NodeStatus
from communication.codec import encode
from communication.connection import NATS_ERRORS, NatsConnection
from worker.node_lease import NodeLease
from worker.skills import Skill

log = get_logger("worker.heartbeat")


class Heartbeat:
    """Sends this node's beats every `interval_s` and deregisters it on shutdown."""

    def __init__(
        self,
        conn: NatsConnection,
        lease_kv: KeyValue,
        *,
        node_id: str,
        skills: Callable[[], list[Skill]],
        skill_loads: Callable[[], dict[str, SkillLoad]],
        labels: dict[str, str],
        capacity: int,
        interval_s: float,
        running: Callable[[], int],
        status: Callable[[], NodeStatus],
        control: Callable[[], NodeControl],
        clock: Clock,
    ) -> None:
        self._conn = conn
        self._node_id = node_id
        self.instance_id = new_id()
        self._lease = NodeLease(lease_kv, node_id, self.instance_id, clock)
        # Set when another process took this node id: the worker must stop.
        self.lost = asyncio.Event()
        # One beat at a time (each is a compare-and-set on the key); none after the last.
        self._sending = asyncio.Lock()
        self._closed = False
        self._skills = skills
        self._skill_loads = skill_loads
        self._labels = labels
        self._capacity = capacity
        self._interval_s = interval_s
        self._running = running
        self._status = status
        self._control = control
        self._clock = clock
        self._started_at = clock.now()
        self._process = psutil.Process()
        self._seq = 0
        psutil.cpu_percent(interval=None)  # the first call only sets the baseline

    def beat(self, status: NodeStatus | None = None) -> NodeHeartbeat:
        """This node's report as of now."""
        self._seq += 1
        skills = self._skills()
        return NodeHeartbeat(
            node_id=self._node_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            status=status or self._status(),
            skills=[s.name for s in skills],
            skill_versions={s.name: s.version for s in skills},
            skill_risks={s.name: s.risk.value for s in skills},
            skill_loads=self._skill_loads(),
            labels=self._labels,
            capacity=self._capacity,
            running=self._running(),
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_percent=psutil.virtual_memory().percent,
            rss_mb=round(self._process.memory_info().rss / 1e6, 1),
            load1=os.getloadavg()[0],
            interval_s=self._interval_s,
            started_at=self._started_at,
            sent_at=self._clock.now(),
            seq=self._seq,
            instance_id=self.instance_id,
            control=self._control(),
        )

    async def acquire(self, *, missed_beats: int) -> None:
        """Claim the node id with a first beat (before the worker pulls anything); NodeIdInUseError if
        a live process holds it."""
        await self._lease.acquire(encode(self.beat()), missed_beats=missed_beats)

    async def run(self, stopping: asyncio.Event) -> None:
        """Beat every interval until `stopping` is set (or the node id is lost)."""
        while not stopping.is_set() and not self.lost.is_set():
            await self.send(self.beat())
            await wait_any(stopping, timeout_s=self._interval_s)

    async def send(self, beat: NodeHeartbeat, *, last: bool = False) -> None:
        """Publish one beat (core NATS) and store it in the KV bucket; failures are logged. After
        the `last` one (the deregistration) nothing more is sent."""
        payload = encode(beat)
        async with self._sending:
            if self._closed:
                return
            self._closed = last
            try:
                await self._conn.nc.publish(self._conn.subjects.heartbeat(self._node_id), payload)
                if not await self._lease.renew(payload):
                    self.lost.set()
            except NATS_ERRORS as exc:
                log.warning("heartbeat.failed", error=str(exc) or type(exc).__name__)

    async def deregister(self) -> None:
        """Tell the coordinator this node is gone on purpose, and free its node id."""
        if self.lost.is_set():
            return  # the id is another process's now: its beats speak for the node
        await self.send(self.beat(NodeStatus.OFFLINE), last=True)
        if not self.lost.is_set():
            await self.release()

    async def release(self) -> None:
        """Free the node id (also when the worker failed to start after claiming it)."""
        try:
            await self._lease.release()
        except NATS_ERRORS as exc:
            log.warning("heartbeat.deregister_failed", error=str(exc) or type(exc).__name__)
