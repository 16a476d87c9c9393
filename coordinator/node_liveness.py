"""The node liveness check (a periodic job): nodes whose beats stopped go offline, their tasks are
reclaimed, and the registry's changes are persisted."""

from __future__ import annotations

from communication.connection import NatsConnection
from coordinator.node_registry import NodeRegistry
from coordinator.operations import TaskOperations


class NodeLiveness:
    """Judges the nodes' heartbeats on the coordinator's clock."""

    def __init__(
        self, conn: NatsConnection, registry: NodeRegistry, operations: TaskOperations, *, reclaim: bool
    ) -> None:
        self._conn = conn
        self._registry = registry
        self._operations = operations
        self._reclaim = reclaim
        self._reconnects = conn.reconnects

    async def check(self) -> None:
        """Mark silent nodes offline and reclaim their tasks; persist what changed."""
        if self._conn.reconnects != self._reconnects:
            # We were cut off, not the workers: their beats could not reach us meanwhile.
            self._reconnects = self._conn.reconnects
            self._registry.grace()
        for node in self._registry.sweep():
            if self._reclaim:
                await self._operations.reclaim_node(node.node_id)
        await self._registry.persist()
