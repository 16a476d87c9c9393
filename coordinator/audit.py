"""Auditing the event log: verifying its hash chain, and anchoring its head outside the database.

Every few seconds the coordinator puts the newest event's id and hash in KV `<prefix>_audit` (key
`head`, history 64), signed with its audit key (`<db dir>/auth/audit.nk`, storage/audit_anchor.py).
A verification walks the whole chain (storage/audit.py) and checks it against the highest validly
signed anchor: history rewritten up to the anchor, or a tail cut off while the coordinator was
stopped, is caught there, because the anchor lives in NATS and its key is not in the database.

The anchor only moves forward. A coordinator whose log ends below the anchor, or whose event at
the anchor has another hash, does not anchor (that would launder the cut): it logs
`audit.anchor_refused` (error, once per reason) and `claw audit verify` reports the tampering.
Writes are compare-and-set on the key's revision: an anchor written by anyone else makes the
coordinator read the history again, where an unsigned or forged anchor counts for nothing.
"""

from __future__ import annotations

from nacl.signing import VerifyKey
from nats.js.errors import KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from common.api import AuditReply
from common.clock import Clock
from common.log import get_logger
from communication.codec import encode
from communication.connection import NATS_ERRORS
from storage.audit_anchor import (
    ANCHOR_KEY,
    Anchor,
    AnchorFinding,
    AnchorSigner,
    HistoryEntry,
    judge,
    read_history,
    verify_key,
)
from storage.task_writer import TaskWriter

log = get_logger("coordinator.audit")

NO_ANCHOR_YET = "no anchor yet: the coordinator anchors the log's head every few seconds"


async def anchor_history(kv: KeyValue) -> list[HistoryEntry]:
    """Every kept revision of the anchor key, oldest first (empty: never written)."""
    try:
        entries = await kv.history(ANCHOR_KEY)
    except NoKeysError:
        return []
    return [
        HistoryEntry(entry.revision or 0, None if entry.operation in ("DEL", "PURGE") else (entry.value or b""))
        for entry in entries
    ]


class Auditor:
    """Verifies the chain; anchors its head, signed, forward only."""

    def __init__(self, store: TaskWriter, kv: KeyValue, signer: AnchorSigner, clock: Clock) -> None:
        self._store = store
        self._kv = kv
        self._signer = signer
        self._key: VerifyKey = verify_key(signer.public_key)
        self._clock = clock
        self._loaded = False
        # The highest anchor this coordinator trusts, and the key's last revision (for compare-and-set).
        self._anchored: Anchor | None = None
        self._revision: int | None = None
        # Why the anchor is held back (logged when it changes, not every period).
        self._refusal: str | None = None

    @property
    def public_key(self) -> str:
        """The audit key's public half, which verifiers need (`claw audit key`)."""
        return self._signer.public_key

    async def anchor(self) -> None:
        """Put the chain's current head in KV, signed, when it moved forward since the last anchor."""
        head = await self._store.chain_head()
        if head is None:
            return
        try:
            if not self._loaded:
                await self._load()
            if self._anchored is not None and (head[0], head[1]) == (self._anchored.event_id, self._anchored.hash):
                return
            refusal = await self._refusal_for(head)
            if refusal is not None:
                self._refuse(refusal, head[0])
                return
            await self._put(self._signer.sign(head[0], head[1], self._clock.now()))
        except NATS_ERRORS as exc:
            log.warning("audit.anchor_failed", error=str(exc) or type(exc).__name__)

    async def verify(self) -> AuditReply:
        """Walk the chain, then check it against the anchor history."""
        verifier = await self._store.verify_chain()
        try:
            entries = await anchor_history(self._kv)
        except NATS_ERRORS as exc:
            note = f"the anchors in NATS could not be read ({exc or type(exc).__name__})"
            return judge(verifier, None, {}, public_key=self.public_key, note=note)
        finding = read_history(entries, self._key)
        stored = {event_id: await self._store.event_hash(event_id) for event_id in finding.anchored_ids()}
        return judge(verifier, finding, stored, public_key=self.public_key, note=None if entries else NO_ANCHOR_YET)

    async def _load(self) -> None:
        entries = await anchor_history(self._kv)
        finding: AnchorFinding = read_history(entries, self._key)
        for problem in finding.problems:
            log.error("audit.anchor_history", problem=problem, security=True)
        self._anchored = finding.trusted
        self._revision = entries[-1].revision if entries else None
        self._loaded = True

    async def _refusal_for(self, head: tuple[int, str]) -> str | None:
        """Why `head` must not be anchored (None: it may): it is below the anchor, or the anchored
        event's hash changed."""
        anchored = self._anchored
        if anchored is None:
            return None
        if head[0] < anchored.event_id:
            return (
                f"the log ends at event {head[0]}, below the anchored event {anchored.event_id}: it was cut "
                "short; the anchor is not moved back (after restoring a backup: `claw audit reset`)"
            )
        if await self._store.event_hash(anchored.event_id) != anchored.hash:
            return f"event {anchored.event_id} no longer has its anchored hash: the history was rewritten"
        return None

    def _refuse(self, reason: str, head_id: int) -> None:
        if reason != self._refusal:
            anchored = None if self._anchored is None else self._anchored.event_id
            log.error("audit.anchor_refused", reason=reason, head_event=head_id, anchored_event=anchored, security=True)
        self._refusal = reason

    async def _put(self, anchor: Anchor) -> None:
        try:
            if self._revision is None:
                revision = await self._kv.create(ANCHOR_KEY, encode(anchor))
            else:
                revision = await self._kv.update(ANCHOR_KEY, encode(anchor), last=self._revision)
        except KeyWrongLastSequenceError:
            # Someone else wrote the key since: read the history again before the next anchor.
            log.warning("audit.anchor_written_elsewhere", security=True)
            self._loaded = False
            return
        self._anchored, self._revision, self._refusal = anchor, revision, None
