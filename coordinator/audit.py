"""Auditing the event log: verifying its hash chain, and anchoring its head outside the database.

Every few seconds the coordinator puts the newest event's id and hash in KV `<prefix>_audit`. A
verification walks the whole chain (storage/audit.py) and then checks that the anchored event still
has the anchored hash: a history rewritten consistently up to the anchor (every hash recomputed) is
caught there, because the anchor lives in NATS, not in the database file.
"""

from __future__ import annotations

import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from common.api import AuditReply
from common.log import get_logger
from communication.connection import NATS_ERRORS
from storage.task_writer import TaskWriter

log = get_logger("coordinator.audit")

ANCHOR_KEY = "head"


class Anchor(msgspec.Struct, frozen=True):
    """The chain's head at some moment."""

    event_id: int
    hash: str


class Auditor:
    """Verifies the chain; anchors its head."""

    def __init__(self, store: TaskWriter, kv: KeyValue) -> None:
        self._store = store
        self._kv = kv
        self._anchored: Anchor | None = None

    async def anchor(self) -> None:
        """Put the chain's current head in KV (when it moved since the last anchor)."""
        head = await self._store.chain_head()
        if head is None or (self._anchored is not None and self._anchored.event_id == head[0]):
            return
        anchor = Anchor(event_id=head[0], hash=head[1])
        try:
            await self._kv.put(ANCHOR_KEY, msgspec.json.encode(anchor))
            self._anchored = anchor
        except NATS_ERRORS as exc:
            log.warning("audit.anchor_failed", error=str(exc))

    async def verify(self) -> AuditReply:
        """Walk the chain, then compare the anchored event with the anchor."""
        checked, broken = await self._store.verify_chain()
        if broken is not None:
            return AuditReply(ok=False, checked=checked, broken_event=broken.event_id, problem=broken.problem)
        anchor = await self._read_anchor()
        if anchor is None:
            return AuditReply(ok=True, checked=checked)
        stored = await self._store.event_hash(anchor.event_id)
        if stored is None:
            problem = "it is anchored in NATS but missing from the database: the log was cut short"
            return AuditReply(ok=False, checked=checked, broken_event=anchor.event_id, problem=problem)
        if stored != anchor.hash:
            problem = "its hash differs from the one anchored in NATS: the history up to it was rewritten"
            return AuditReply(ok=False, checked=checked, broken_event=anchor.event_id, problem=problem)
        return AuditReply(ok=True, checked=checked, anchored_event=anchor.event_id)

    async def _read_anchor(self) -> Anchor | None:
        try:
            entry = await self._kv.get(ANCHOR_KEY)
        except KeyNotFoundError:
            return None
        return None if entry.value is None else msgspec.json.decode(entry.value, type=Anchor)
