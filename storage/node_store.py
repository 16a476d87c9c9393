"""Persistence of the node registry (the last known state of every worker node)."""

from __future__ import annotations

import msgspec

from common.models import NodeCommand, NodeView
from common.states import NodeControl, NodeStatus
from storage.database import Database

UPSERT_NODE = """
INSERT INTO nodes (node_id, status, hostname, pid, version, skills, labels, capacity, running, cpu_percent,
                   memory_percent, rss_mb, load1, heartbeat_interval_s, started_at, last_seen)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (node_id) DO UPDATE SET
    status = excluded.status, hostname = excluded.hostname, pid = excluded.pid, version = excluded.version,
    skills = excluded.skills, labels = excluded.labels, capacity = excluded.capacity,
    running = excluded.running, cpu_percent = excluded.cpu_percent,
    memory_percent = excluded.memory_percent, rss_mb = excluded.rss_mb, load1 = excluded.load1,
    heartbeat_interval_s = excluded.heartbeat_interval_s, started_at = excluded.started_at,
    last_seen = excluded.last_seen
"""

UPSERT_CONTROL = """
INSERT INTO node_controls (node_id, control, changed_at, changed_by) VALUES (?, ?, ?, ?)
ON CONFLICT (node_id) DO UPDATE SET
    control = excluded.control, changed_at = excluded.changed_at, changed_by = excluded.changed_by
"""

_json = msgspec.json.Encoder()


class NodeStore:
    """Reads and writes of the `nodes` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(self, nodes: list[tuple[NodeView, float]]) -> None:
        """Write (node, heartbeat interval) pairs in one transaction."""
        rows = [
            (
                n.node_id,
                n.status.value,
                n.hostname,
                n.pid,
                n.version,
                _json.encode(n.skills).decode(),
                _json.encode(n.labels).decode(),
                n.capacity,
                n.running,
                n.cpu_percent,
                n.memory_percent,
                n.rss_mb,
                n.load1,
                interval,
                n.started_at,
                n.last_seen,
            )
            for n, interval in nodes
        ]
        await self._db.write([(UPSERT_NODE, rows)])

    async def load_all(self) -> list[tuple[NodeView, float]]:
        """Every node with its heartbeat interval, as last written."""
        rows = await self._db.fetch_all_writer("SELECT * FROM nodes")
        return [
            (
                NodeView(
                    node_id=r["node_id"],
                    status=NodeStatus(r["status"]),
                    hostname=r["hostname"],
                    pid=r["pid"],
                    version=r["version"],
                    skills=msgspec.json.decode(r["skills"], type=list[str]),
                    labels=msgspec.json.decode(r["labels"], type=dict[str, str]),
                    capacity=r["capacity"],
                    running=r["running"],
                    cpu_percent=r["cpu_percent"],
                    memory_percent=r["memory_percent"],
                    rss_mb=r["rss_mb"],
                    load1=r["load1"],
                    started_at=r["started_at"],
                    last_seen=r["last_seen"],
                ),
                r["heartbeat_interval_s"],
            )
            for r in rows
        ]

    async def save_control(self, node_id: str, command: NodeCommand) -> None:
        """Record the desired state of a node."""
        await self._db.write([(UPSERT_CONTROL, [(node_id, command.control.value, command.changed_at, command.by)])])

    async def load_controls(self) -> dict[str, NodeCommand]:
        """The desired state of every node an operator ever controlled, by node id."""
        rows = await self._db.fetch_all_writer("SELECT * FROM node_controls")
        return {
            r["node_id"]: NodeCommand(control=NodeControl(r["control"]), changed_at=r["changed_at"], by=r["changed_by"])
            for r in rows
        }
