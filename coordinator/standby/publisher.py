"""The active coordinator's side of replication: ship every commit, write snapshots.

`ship` runs on the database's writer thread right after a commit and blocks it until JetStream has
stored the commit (it hands the publish to the event loop and waits): so the stream's order is the
commit order, and nothing that follows a commit - the caller resuming, a client's answer, an event's
ack, a dispatch - happens before a standby can have it. A publish that fails for a transient reason
(NATS unreachable, a timeout) is retried with the same msg id, which JetStream deduplicates, for as
long as the lease is ours. A publish the stream refuses because another coordinator appended an
epoch marker means this one was fenced: it stops (the lease is declared lost), and its database,
which holds a commit nobody else has, is replaced by a snapshot when it rejoins as a standby.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from nats.js.api import ObjectMeta
from nats.js.errors import APIError, NotFoundError

from common.config import JetStreamSettings
from common.errors import LeaseLostError
from common.log import get_logger
from communication.codec import encode
from communication.connection import NATS_ERRORS, NatsConnection
from coordinator.standby import stream
from coordinator.standby.stream import EpochMarker, SnapshotInfo
from storage.database import Database
from storage.replication import ReplicatedCommit, encode_commit

log = get_logger("coordinator.standby.publisher")

PUBLISH_TIMEOUT_S = 2.0
RETRY_S = 0.2


class ReplicationPublisher:
    """Ships commits of one epoch to `<PREFIX>_REPL`; `begin()` first, then `Database.set_shipper(self)`."""

    def __init__(
        self,
        conn: NatsConnection,
        js_settings: JetStreamSettings,
        *,
        key: bytes,
        epoch: int,
        node_id: str,
        keep_trying: Callable[[], bool],
        on_fenced: Callable[[str], None],
    ) -> None:
        self._conn = conn
        self._js_settings = js_settings
        self._key = key
        self._epoch = epoch
        self._node_id = node_id
        self._keep_trying = keep_trying
        self._on_fenced = on_fenced
        self._subject = stream.subject(conn)
        self._last_seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.shipped = 0  # commits shipped (status, benchmarks)
        self.commit_no = 0  # the last commit shipped (or the database's at `begin`)

    @property
    def epoch(self) -> int:
        """This coordinator's epoch: the revision of its lease."""
        return self._epoch

    def continued_at(self, commit_no: int) -> None:
        """The database reached the marker (a takeover): its commit number, for `claw status`."""
        self.commit_no = commit_no

    @property
    def node_id(self) -> str:
        """The node id of this (active) coordinator."""
        return self._node_id

    @property
    def last_seq(self) -> int:
        """The stream sequence of this coordinator's last stored message."""
        return self._last_seq

    async def begin(self, commit_no: int) -> None:
        """Append this epoch's marker; from here on only this coordinator can append.

        `commit_no`: the database's commit (then store a snapshot next), or `stream.CONTINUES` when
        the database is brought to the marker by applying the stream before it (a takeover).
        """
        self._loop = asyncio.get_running_loop()
        marker = EpochMarker(
            epoch=self._epoch, node_id=self._node_id, host=socket.gethostname(), commit_no=commit_no, at=time.time()
        )
        body = encode(marker)
        headers = {
            "Nats-Msg-Id": f"{self._epoch}:start",
            stream.H_EPOCH: str(self._epoch),
            stream.H_MARKER: "epoch",
            stream.H_MAC: stream.mac(self._key, stream.marker_label(str(self._epoch)), body),
        }
        ack = await self._conn.js.publish(self._subject, body, headers=headers, timeout=PUBLISH_TIMEOUT_S)
        self._last_seq = ack.seq
        self.commit_no = max(commit_no, 0)
        log.info("replication.epoch_started", epoch=self._epoch, commit_no=commit_no, stream_seq=ack.seq)

    def ship(self, commit: ReplicatedCommit) -> None:
        """Publish `commit` and wait for JetStream to store it (called on the writer thread)."""
        assert self._loop is not None, "begin() first"
        asyncio.run_coroutine_threadsafe(self._publish(commit), self._loop).result()

    async def _publish(self, commit: ReplicatedCommit) -> None:
        data = encode_commit(commit)
        parts = [data[i : i + stream.PART_BYTES] for i in range(0, len(data), stream.PART_BYTES)] or [b""]
        for index, part in enumerate(parts):
            headers = {
                "Nats-Msg-Id": f"{self._epoch}:{commit.commit_no}:{index}",
                "Nats-Expected-Last-Sequence": str(self._last_seq),
                stream.H_EPOCH: str(self._epoch),
                stream.H_COMMIT: str(commit.commit_no),
                stream.H_PART: f"{index + 1}/{len(parts)}",
            }
            label = stream.commit_label(headers[stream.H_EPOCH], headers[stream.H_COMMIT], headers[stream.H_PART])
            headers[stream.H_MAC] = stream.mac(self._key, label, part)
            self._last_seq = await self._publish_part(commit.commit_no, part, headers)
        self.shipped += 1
        self.commit_no = commit.commit_no

    async def _publish_part(self, commit_no: int, part: bytes, headers: dict[str, str]) -> int:
        """Publish until stored (the same msg id: a retry of a stored one answers `duplicate`)."""
        failing = False
        while True:
            try:
                ack = await self._conn.js.publish(self._subject, part, headers=headers, timeout=PUBLISH_TIMEOUT_S)
                if failing:
                    log.info("replication.publish_recovered", commit_no=commit_no)
                return ack.seq
            except APIError as exc:
                if exc.err_code == stream.WRONG_LAST_SEQUENCE and await self._only_forgeries_since():
                    headers["Nats-Expected-Last-Sequence"] = str(self._last_seq)
                    continue
                if exc.err_code == stream.WRONG_LAST_SEQUENCE:
                    reason = "another coordinator became active and appended to the replication stream"
                    self._on_fenced(reason)
                    raise LeaseLostError(
                        f"this coordinator was fenced: {reason}; commit {commit_no} is not replicated and was not "
                        "acknowledged to anyone; restart it to rejoin as a standby"
                    ) from None
                error: BaseException = exc
            except NATS_ERRORS as exc:
                error = exc
            if not self._keep_trying():
                raise LeaseLostError(
                    f"commit {commit_no} could not be replicated before the lease ended "
                    f"({error or type(error).__name__}); it was not acknowledged to anyone; "
                    "restart the coordinator to rejoin as a standby"
                )
            if not failing:
                log.warning("replication.publish_failed", commit_no=commit_no, error=str(error) or type(error).__name__)
            failing = True
            await asyncio.sleep(RETRY_S)

    async def _only_forgeries_since(self) -> bool:
        """Whether everything appended after our last message lacks our key's HMAC (someone else
        published on the subject: refused by the standbys, so it must not stop us either); if so, we
        continue after it. A signed epoch marker among them means we were fenced."""
        name = stream.stream_name(self._conn)
        last = (await self._conn.js.stream_info(name)).state.last_seq
        for seq in range(self._last_seq + 1, last + 1):
            try:
                msg = await self._conn.js.get_msg(name, seq)
            except NotFoundError:
                continue
            headers = msg.headers or {}
            if headers.get(stream.H_MARKER) == "epoch" and stream.mac_ok(
                self._key,
                stream.marker_label(headers.get(stream.H_EPOCH, "")),
                msg.data or b"",
                headers.get(stream.H_MAC),
            ):
                return False
        log.warning("security.replication_foreign_messages", after_seq=self._last_seq, last_seq=last)
        self._last_seq = last
        return True

    async def snapshot(self, db: Database) -> SnapshotInfo:
        """Copy the database as of its last commit and store the copy as the newest snapshot."""
        fd, name = tempfile.mkstemp(prefix="claw-snapshot-", suffix=".db", dir=db.path.parent)
        os.close(fd)
        path = Path(name)
        try:
            # On the writer thread, between two commits: the copy, its commit number and the stream
            # sequence of that commit belong together.
            commit_no, stream_seq = await db.backup_to(path, lambda: self._last_seq)
            data = await asyncio.to_thread(path.read_bytes)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        info = SnapshotInfo(
            commit_no=commit_no, stream_seq=stream_seq, epoch=self._epoch, node_id=self._node_id,
            created_at=time.time(), size=len(data),
        )  # fmt: skip
        info = msgspec.structs.replace(info, mac=stream.mac(self._key, stream.snapshot_label(info), data))
        store = await stream.snapshot_store(self._conn, self._js_settings)
        meta = ObjectMeta(name=stream.SNAPSHOT_OBJECT, description=msgspec.json.encode(info).decode())
        await store.put(stream.SNAPSHOT_OBJECT, data, meta=meta)
        log.info("replication.snapshot_stored", commit_no=commit_no, stream_seq=stream_seq, bytes=len(data))
        return info
