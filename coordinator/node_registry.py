"""The node registry: which workers exist, what they offer, and whether they are alive.

Workers beat every `interval_s` (carried in the beat). A node is offline once
`offline_after_missed_beats` intervals pass without a beat; a beat with status `offline` is a clean
deregistration. Liveness is judged on the coordinator's own clock at receipt, never on the worker's
`sent_at`, so clock skew between machines cannot keep a dead node alive.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from common.clock import Clock
from common.log import get_logger
from common.models import NodeHeartbeat, NodeReport, NodeView
from common.states import NodeStatus
from storage.node_store import NodeStore

log = get_logger("coordinator.nodes")


@dataclass(slots=True)
class _Node:
    view: NodeView
    interval_s: float
    skill_versions: dict[str, str] | None = None
    skill_risks: dict[str, str] | None = None


class NodeRegistry:
    """Node views by id, kept from heartbeats and persisted to the `nodes` table."""

    def __init__(self, store: NodeStore, clock: Clock, *, missed_beats: int) -> None:
        self._store = store
        self._clock = clock
        self._missed_beats = missed_beats
        self._nodes: dict[str, _Node] = {}
        self._dirty: set[str] = set()
        # Silence before this moment does not count (set after our own connection was down).
        self._judge_from = 0.0

    async def load(self) -> None:
        """Seed from the database; nodes that were alive get one timeout window to beat again."""
        now = self._clock.now()
        for view, interval in await self._store.load_all():
            if view.status != NodeStatus.OFFLINE:
                view = msgspec.structs.replace(view, last_seen=max(view.last_seen, now))
            self._nodes[view.node_id] = _Node(view, interval)

    def observe(self, beat: NodeHeartbeat) -> None:
        """Record a heartbeat (or a deregistration)."""
        previous = self._nodes.get(beat.node_id)
        view = NodeView(
            node_id=beat.node_id,
            status=beat.status,
            hostname=beat.hostname,
            pid=beat.pid,
            version=beat.version,
            skills=beat.skills,
            labels=beat.labels,
            capacity=beat.capacity,
            running=beat.running,
            cpu_percent=beat.cpu_percent,
            memory_percent=beat.memory_percent,
            rss_mb=beat.rss_mb,
            load1=beat.load1,
            started_at=beat.started_at,
            last_seen=self._clock.now(),
            skill_versions=beat.skill_versions,
            skill_loads=beat.skill_loads,
        )
        self._nodes[beat.node_id] = _Node(view, beat.interval_s, beat.skill_versions, beat.skill_risks)
        self._dirty.add(beat.node_id)
        if previous is None or previous.view.status != beat.status:
            log.info(
                "node.status",
                node_id=beat.node_id,
                status=beat.status.value,
                previous=None if previous is None else previous.view.status.value,
                skills=beat.skills,
            )

    def note_report(self, report: NodeReport) -> None:
        """What a node answered to a control command: its status now, ahead of its next beat."""
        node = self._nodes.get(report.node_id)
        if node is None or node.view.status == NodeStatus.OFFLINE:
            return
        if node.view.status != report.status:
            log.info("node.status", node_id=report.node_id, status=report.status.value, previous=node.view.status.value)
        node.view = msgspec.structs.replace(node.view, status=report.status, running=report.running)
        self._dirty.add(report.node_id)

    def grace(self, extra_s: float = 0.0) -> None:
        """Restart every live node's timeout after our own connection was down, `extra_s` later
        than now: the workers reconnect on their own schedule, possibly after us."""
        self._judge_from = max(self._judge_from, self._clock.now() + extra_s)

    def sweep(self) -> list[NodeView]:
        """Mark nodes offline whose beats stopped; returns the nodes that just went offline."""
        now = self._clock.now()
        gone: list[NodeView] = []
        for node_id, node in self._nodes.items():
            view = node.view
            if view.status == NodeStatus.OFFLINE:
                continue
            silent_s = now - max(view.last_seen, self._judge_from)
            if silent_s > node.interval_s * self._missed_beats:
                node.view = msgspec.structs.replace(view, status=NodeStatus.OFFLINE, running=0)
                self._dirty.add(node_id)
                gone.append(node.view)
                log.warning(
                    "node.offline",
                    node_id=node_id,
                    silent_s=round(silent_s, 2),
                    missed_beats=int(silent_s / node.interval_s),
                )
        return gone

    async def persist(self) -> None:
        """Write the nodes that changed since the last call."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        try:
            await self._store.upsert([(self._nodes[n].view, self._nodes[n].interval_s) for n in dirty])
        except BaseException:
            # Not written (a full disk, a stop): kept for the next call, never dropped.
            self._dirty |= dirty
            raise

    def get(self, node_id: str) -> NodeView | None:
        """One node's view."""
        node = self._nodes.get(node_id)
        return None if node is None else node.view

    def views(self) -> list[NodeView]:
        """All nodes: online (and paused, draining) first, then offline; by id within each."""
        return sorted(
            (n.view for n in self._nodes.values()),
            key=lambda v: (v.status == NodeStatus.OFFLINE, v.node_id),
        )

    def online_skills(self) -> set[str]:
        """Skills offered by nodes that are alive."""
        return {s for n in self._nodes.values() if n.view.status != NodeStatus.OFFLINE for s in n.view.skills}

    def known_skills(self) -> set[str]:
        """Skills any registered node has offered, alive or not: tasks for them can queue."""
        return {s for n in self._nodes.values() for s in n.view.skills}

    def advertised(self, skill: str) -> tuple[str, str] | None:
        """(version, risk) of a skill as a node that runs it reports it (live nodes first)."""
        for node in sorted(self._nodes.values(), key=lambda n: n.view.status == NodeStatus.OFFLINE):
            if skill in node.view.skills:
                version = (node.skill_versions or {}).get(skill, "0.0.0")
                # Unknown (an older worker, or not heard from since a restart): assume it acts outside.
                return version, (node.skill_risks or {}).get(skill, "write_external")
        return None

    def online_count(self) -> int:
        """How many nodes are alive."""
        return sum(1 for n in self._nodes.values() if n.view.status != NodeStatus.OFFLINE)
