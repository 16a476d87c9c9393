"""A worker's claim on its node id: one live process per id.

The node's key in KV `<prefix>_nodes` holds its last heartbeat, and only the process whose instance
id is in it writes there: every beat is a compare-and-set on the revision the process wrote last.

- Starting, a worker creates the key. If it exists and its beat says `offline` (a clean
  deregistration), the worker takes it over. Otherwise it watches the key for the window in which
  the coordinator would declare that node offline (`offline_after_missed_beats` of its heartbeat
  intervals): a new beat means a live process owns the id, and the start is refused naming it; no
  beat means that process is dead (killed, its machine gone), and the new one takes the key over.
  So a worker restarted after a SIGKILL starts within that window (3 s with the defaults).
- A worker whose compare-and-set fails finds another process's instance id in the key: it was
  frozen or cut off for longer than the window and its id was taken over. It must stop.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from common.clock import Clock
from common.errors import NodeIdInUseError
from common.log import get_logger
from common.models import NodeHeartbeat
from common.states import NodeStatus
from communication.codec import DecodeError, decode

log = get_logger("worker.lease")

# How often a starting worker looks at a taken key for a live owner's beats.
WATCH_INTERVAL_S = 0.1


class NodeLease:
    """This process's hold on `node_id`'s key; `acquire` once, then `renew` with every beat."""

    def __init__(self, kv: KeyValue, node_id: str, instance_id: str, clock: Clock) -> None:
        self._kv = kv
        self._clock = clock
        self._node_id = node_id
        self._instance_id = instance_id
        self._revision: int | None = None

    async def acquire(self, beat: bytes, *, missed_beats: int) -> None:
        """Take the key for this process, or raise NodeIdInUseError if a live process holds it."""
        while True:
            try:
                self._revision = await self._kv.create(self._node_id, beat)
                return
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await self._kv.get(self._node_id)
            except KeyNotFoundError:
                continue  # deleted meanwhile (its owner deregistered): create it
            if entry.value == beat and entry.revision is not None:
                # Our own create, stored although its answer timed out (a start-up retry): ours.
                self._revision = entry.revision
                return
            owner = _decode(entry.value)
            if owner is not None and owner.status != NodeStatus.OFFLINE:
                await self._wait_for_silence(owner, entry.revision, missed_beats)
            try:
                self._revision = await self._kv.update(self._node_id, beat, last=entry.revision)
            except KeyWrongLastSequenceError:
                continue  # someone wrote meanwhile: look again
            log.info("node.id_taken_over", node_id=self._node_id, previous_pid=owner.pid if owner else None)
            return

    async def _wait_for_silence(self, owner: NodeHeartbeat, revision: int | None, missed_beats: int) -> None:
        """Return once the owner stayed silent for the offline window; raise if it beats."""
        window_s = owner.interval_s * missed_beats
        deadline = self._clock.monotonic() + window_s
        while self._clock.monotonic() < deadline:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                entry = await self._kv.get(self._node_id)
            except KeyNotFoundError:
                return  # it deregistered
            if entry.revision != revision:
                current = _decode(entry.value) or owner
                if current.status == NodeStatus.OFFLINE:
                    return
                raise NodeIdInUseError(
                    f"node id '{self._node_id}' is in use by a live worker (pid {current.pid} on "
                    f"{current.hostname}, beating every {current.interval_s:g} s); stop it first, or start "
                    "this worker with another --node-id"
                )
        log.info("node.previous_owner_silent", node_id=self._node_id, silent_s=round(window_s, 2))

    async def renew(self, beat: bytes) -> bool:
        """Write a beat if this process still holds the key; False once another process took it."""
        try:
            self._revision = await self._kv.update(self._node_id, beat, last=self._revision)
            return True
        except KeyWrongLastSequenceError:
            pass
        # An earlier write may have landed although its answer was lost: then the key is still ours.
        try:
            entry = await self._kv.get(self._node_id)
        except KeyNotFoundError:
            return await self._recreate(beat)
        holder = _decode(entry.value)
        if holder is None or holder.instance_id != self._instance_id:
            log.error(
                "node.id_taken_over_by_another",
                node_id=self._node_id,
                by_pid=None if holder is None else holder.pid,
                by_host=None if holder is None else holder.hostname,
            )
            return False
        self._revision = await self._kv.update(self._node_id, beat, last=entry.revision)
        return True

    async def _recreate(self, beat: bytes) -> bool:
        """The key vanished (deleted by hand): nobody holds the id, so take it again."""
        try:
            self._revision = await self._kv.create(self._node_id, beat)
        except KeyWrongLastSequenceError:
            return False  # another process was quicker
        log.warning("node.key_recreated", node_id=self._node_id)
        return True

    async def release(self) -> None:
        """Drop the key (a clean shutdown): the id is free at once."""
        with contextlib.suppress(KeyWrongLastSequenceError):  # taken over: not ours to delete
            await self._kv.delete(self._node_id, last=self._revision)


def _decode(value: bytes | None) -> NodeHeartbeat | None:
    if not value:
        return None
    try:
        return decode(value, NodeHeartbeat)
    except DecodeError:
        return None
