"""Telling the coordinator which deliveries this worker has started, so it can NAK them if we die.

The ack subject of a running attempt normally reaches the coordinator in its `started` event, which
a short attempt never sends (see started_event). These claims fill that gap cheaply: a core NATS
message (no JetStream store, no ack) per event-loop turn, listing every delivery started since the
previous one.
"""

from __future__ import annotations

import asyncio

from common.log import get_logger
from common.models import DeliveryClaim, DeliveryClaims
from communication.codec import encode
from communication.connection import NATS_ERRORS, NatsConnection

log = get_logger("worker.claims")


class ClaimReporter:
    """Collects claims as deliveries start and publishes them in one message per loop turn."""

    def __init__(self, conn: NatsConnection, node_id: str) -> None:
        self._conn = conn
        self._node_id = node_id
        self._subject = conn.subjects.claims(node_id)
        self._pending: list[DeliveryClaim] = []
        self._wake = asyncio.Event()
        self._closed = False

    def claim(self, task_id: str, attempt: int, ack_subject: str | None) -> None:
        """Note a delivery that is about to run (sent on the next loop turn)."""
        if ack_subject:
            self._pending.append(DeliveryClaim(task_id, attempt, ack_subject))
            self._wake.set()

    def close(self) -> None:
        """Send what is pending, then let `run` return."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        """Publish pending claims whenever there are some, until `close`."""
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            await self._send()
        await self._send()

    async def _send(self) -> None:
        claims, self._pending = self._pending, []
        if not claims:
            return
        try:
            await self._conn.nc.publish(self._subject, encode(DeliveryClaims(node_id=self._node_id, claims=claims)))
        except NATS_ERRORS as exc:
            # Only early reclaim is lost: should this node die, these tasks wait out the ack wait.
            log.warning("claims.send_failed", count=len(claims), error=str(exc) or type(exc).__name__)
