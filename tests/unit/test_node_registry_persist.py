"""The node registry keeps a change it could not write and writes it at the next call."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.clock import ManualClock
from common.models import NodeHeartbeat
from common.states import NodeStatus
from coordinator.node_registry import NodeRegistry
from storage.database import Database
from storage.node_store import NodeStore


def beat(node_id: str) -> NodeHeartbeat:
    return NodeHeartbeat(
        node_id=node_id, hostname="h", pid=1, version="1", status=NodeStatus.ONLINE, skills=["echo"],
        capacity=4, running=0, interval_s=1.0, started_at=1.0, sent_at=1.0,
    )  # fmt: skip


async def test_a_node_change_whose_write_failed_is_written_at_the_next_persist(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "claw.db")
    try:
        registry = NodeRegistry(NodeStore(db), ManualClock(), missed_beats=3)
        await registry.load()
        registry.observe(beat("w1"))
        # A real SQLite refusal of the write (as a full disk would make), then the disk is back.
        await db.write([("CREATE TRIGGER refuse BEFORE INSERT ON nodes BEGIN SELECT RAISE(ABORT, 'full'); END", [()])])
        with pytest.raises(Exception, match="full"):
            await registry.persist()
        await db.write([("DROP TRIGGER refuse", [()])])
        await registry.persist()
        rows = await db.fetch_all("SELECT node_id, status FROM nodes")
        assert [(r["node_id"], r["status"]) for r in rows] == [("w1", "online")]
    finally:
        await db.close()
