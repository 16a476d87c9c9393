"""The node liveness check (a periodic job): nodes whose beats stopped go offline, their tasks are
reclaimed, and the registry's changes are persisted."""

from __future__ import annotations

from common.log import get_logger
from communication.connection import NatsConnection
from coordinator.node_registry import NodeRegistry
from coordinator.operations import TaskOperations

log = get_logger("coordinator.nodes")


class NodeLiveness:
    """Judges the nodes' heartbeats on the coordinator's clock, only while the coordinator itself
    can hear them.

    While our own connection is down no beat can reach us, so silence says nothing about the nodes:
    nobody is judged. After a reconnect every node gets a full window again, plus the time a worker
    may take to reconnect after us (`reconnect_wait_s`), so a node that was merely unreachable keeps
    its running attempts (docs/Reliability.md, "NATS outages").
    """

    def __init__(
        self,
        conn: NatsConnection,
        registry: NodeRegistry,
        operations: TaskOperations,
        *,
        reclaim: bool,
        reconnect_wait_s: float,
    ) -> None:
        self._conn = conn
        self._registry = registry
        self._operations = operations
        self._reclaim = reclaim
        self._reconnects = conn.reconnects
        self._cut_off = False
        # nats-py waits reconnect_time_wait (+ jitter) between tries; a worker may be one try behind.
        self._reconnect_slack_s = reconnect_wait_s + 1.0

    async def check(self) -> None:
        """Mark silent nodes offline and reclaim their tasks; persist what changed."""
        if not self._conn.is_connected:
            if not self._cut_off:
                log.warning("nodes.judging_paused", reason="the coordinator is disconnected from NATS")
            self._cut_off = True
            await self._registry.persist()
            return
        if self._cut_off or self._conn.reconnects != self._reconnects:
            # We were cut off, not the workers: their beats could not reach us meanwhile.
            self._cut_off = False
            self._reconnects = self._conn.reconnects
            self._registry.grace(self._reconnect_slack_s)
            log.info("nodes.judging_resumed", grace_s=self._reconnect_slack_s)
        for node in self._registry.sweep():
            if self._reclaim:
                await self._operations.reclaim_node(node.node_id)
        await self._registry.persist()
