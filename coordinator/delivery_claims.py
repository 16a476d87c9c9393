"""The deliveries each worker said it started (`DeliveryClaims`), kept briefly for reclaim.

Workers send them once per event-loop turn; at full load that is hundreds of messages a second, so
they are kept raw (no decoding) and only for `keep_s`: long enough for a dead node to be declared
offline, after which JetStream's own ack wait takes over anyway.
"""

from __future__ import annotations

from collections import deque

from nats.aio.msg import Msg

from common.clock import Clock
from common.log import get_logger
from common.models import DeliveryClaim, DeliveryClaims
from communication.codec import DecodeError, decode

log = get_logger("coordinator.claims")


class ClaimBook:
    """Recent delivery claims per node."""

    def __init__(self, clock: Clock, keep_s: float) -> None:
        self._clock = clock
        self._keep_s = keep_s
        self._by_node: dict[str, deque[tuple[float, bytes]]] = {}

    async def on_message(self, msg: Msg) -> None:
        """Keep one claims message (the node is the subject's last token)."""
        node_id = msg.subject.rsplit(".", 1)[-1]
        now = self._clock.monotonic()
        kept = self._by_node.get(node_id)
        if kept is None:
            kept = self._by_node[node_id] = deque()
        kept.append((now, msg.data))
        while kept[0][0] < now - self._keep_s:
            kept.popleft()

    def take(self, node_id: str) -> list[DeliveryClaim]:
        """The recent claims of a node (forgotten here), oldest first."""
        kept = self._by_node.pop(node_id, None)
        if not kept:
            return []
        cutoff = self._clock.monotonic() - self._keep_s
        claims: list[DeliveryClaim] = []
        for at, raw in kept:
            if at < cutoff:
                continue
            try:
                claims.extend(decode(raw, DeliveryClaims).claims)
            except DecodeError as exc:
                log.warning("claims.bad_message", node_id=node_id, error=str(exc))
        return claims
