"""A standby's copy of the state database, kept current from the replication stream.

`bootstrap()` replaces the local file with the newest snapshot (a standby's own earlier file may
hold a commit that was never replicated, so it is never trusted); `follow()` applies the stream from
the snapshot's sequence on, commit by commit; `catch_up()` applies everything the stream holds now
(what a standby does after taking the lease, before it serves). A gap in the commit numbers, or an
epoch marker whose coordinator started from a database this copy does not equal, means the copy can
no longer be brought forward by applying: it bootstraps again from the snapshot that coordinator
wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import msgspec
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError, ObjectNotFoundError

from common.config import JetStreamSettings
from common.errors import ClawError, MigrationError, StorageError
from common.log import get_logger
from communication.codec import DecodeError, decode
from communication.connection import NATS_ERRORS, NatsConnection
from coordinator.standby import stream
from coordinator.standby.stream import EpochMarker, SnapshotInfo
from storage.audit_anchor import key_path
from storage.database import Database
from storage.migrations import LATEST_VERSION
from storage.replication import decode_commit

log = get_logger("coordinator.standby.follower")

SNAPSHOT_WAIT_S = 0.5
NEXT_MSG_S = 0.5


class ResyncNeeded(ClawError):
    """The local copy cannot be brought forward by applying the stream: bootstrap it again."""

    code = "resync"


class Follower:
    """The standby's database and its position in the replication stream."""

    def __init__(self, conn: NatsConnection, js_settings: JetStreamSettings, db_path: Path, *, key: bytes) -> None:
        self._conn = conn
        self._key = key
        self.refused = 0  # messages whose HMAC did not match (forged, or another prefix's key)
        self._js_settings = js_settings
        self.db_path = db_path
        self.db: Database | None = None
        self.commit_no = 0  # the last commit applied
        self.stream_seq = 0  # the last stream message looked at
        self.epoch = 0  # the newest epoch marker seen
        self.active: EpochMarker | None = None
        self.applied_at = 0.0
        self._parts: list[bytes] = []
        self._sub: JetStreamContext.PushSubscription | None = None

    async def bootstrap(self, *, newer_than_seq: int = 0, deadline_s: float = 60.0) -> SnapshotInfo:
        """Replace the local database with the newest snapshot (waiting for one past `newer_than_seq`)."""
        await self.close()
        store = await stream.snapshot_store(self._conn, self._js_settings)
        give_up = time.monotonic() + deadline_s
        while True:
            try:
                info_obj = await store.get_info(stream.SNAPSHOT_OBJECT)
                info = msgspec.json.decode((info_obj.description or "").encode(), type=SnapshotInfo)
                if info.stream_seq >= newer_than_seq:
                    result = await store.get(stream.SNAPSHOT_OBJECT)
                    break
            except (ObjectNotFoundError, NotFoundError, msgspec.DecodeError):
                pass
            if time.monotonic() > give_up:
                raise StorageError(
                    f"no snapshot of the active coordinator's database in '{stream.snapshot_bucket(self._conn)}' "
                    f"after {deadline_s:g} s: is the active coordinator running with coordinator.replication on?"
                )
            await asyncio.sleep(SNAPSHOT_WAIT_S)
        data = result.data or b""
        if not stream.mac_ok(self._key, stream.snapshot_label(info), data, info.mac):
            raise StorageError(
                f"the snapshot in '{stream.snapshot_bucket(self._conn)}' is not signed with this coordinator's key "
                f"({key_path(self.db_path)}): copy the active coordinator's key file there "
                "(docs/RUNBOOK.md, 'A standby coordinator'); nothing was applied"
            )
        schema = await asyncio.to_thread(_replace_file, self.db_path, data)
        if schema != LATEST_VERSION:
            # The active coordinator's statements are written for its schema: applied to another one
            # they fail half way, or (opening would migrate the copy) quietly differ. Refuse, at once.
            raise MigrationError(
                f"this standby's claw has database schema version {LATEST_VERSION}, the active coordinator's "
                f"database has version {schema}: a standby must run the same claw version as the active one "
                "(upgrade both: docs/RUNBOOK.md, 'A standby coordinator'); nothing was applied"
            )
        self.db = await Database.open(self.db_path, check="off")
        self.commit_no = await self.db.commit_no()
        self.stream_seq = info.stream_seq
        self.epoch = max(self.epoch, info.epoch)
        self._parts = []
        log.info("standby.bootstrapped", commit_no=self.commit_no, stream_seq=self.stream_seq, bytes=len(data))
        return info

    async def close(self) -> None:
        """Stop following and close the database."""
        await self._unsubscribe()
        if self.db is not None:
            await self.db.close()
            self.db = None

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()

    async def _subscription(self) -> JetStreamContext.PushSubscription:
        if self._sub is None:
            config = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.stream_seq + 1
            )
            self._sub = await self._conn.js.subscribe(
                stream.subject(self._conn), ordered_consumer=True, config=config, idle_heartbeat=2.0
            )
        return self._sub

    async def step(self, timeout_s: float = NEXT_MSG_S) -> bool:
        """Apply the next message if one comes within `timeout_s`; False if none came."""
        sub = await self._subscription()
        try:
            msg: Msg = await sub.next_msg(timeout=timeout_s)
        except TimeoutError:
            return False
        except NATS_ERRORS as exc:
            if "timeout" in type(exc).__name__.lower():
                return False
            raise
        await self._apply(msg)
        return True

    async def catch_up(self, until_seq: int | None = None) -> int:
        """Apply everything the stream holds now (or up to `until_seq`); returns the last commit applied."""
        last_seq = until_seq
        if last_seq is None:
            last_seq = (await self._conn.js.stream_info(stream.stream_name(self._conn))).state.last_seq
        while self.stream_seq < last_seq:
            await self.step(timeout_s=2.0)
        await self._unsubscribe()
        return self.commit_no

    async def lag(self) -> int:
        """Stream messages not yet applied."""
        last_seq = (await self._conn.js.stream_info(stream.stream_name(self._conn))).state.last_seq
        return max(last_seq - self.stream_seq, 0)

    def _signed(self, headers: dict[str, str], body: bytes) -> bool:
        epoch = headers.get(stream.H_EPOCH, "")
        if headers.get(stream.H_MARKER) == "epoch":
            label = stream.marker_label(epoch)
        else:
            label = stream.commit_label(epoch, headers.get(stream.H_COMMIT, ""), headers.get(stream.H_PART, ""))
        return stream.mac_ok(self._key, label, body, headers.get(stream.H_MAC))

    async def _apply(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.stream_seq:
            return
        headers = msg.headers or {}
        if not self._signed(headers, msg.data):
            self.stream_seq = seq
            self.refused += 1
            log.warning(
                "security.replication_refused", stream_seq=seq, subject=msg.subject,
                reason="its HMAC does not match this coordinator's key: published by someone else; not applied",
            )  # fmt: skip
            return
        if headers.get(stream.H_MARKER) == "epoch":
            self.stream_seq = seq
            self._parts = []  # parts of a commit whose publisher died before its last one
            try:
                marker = decode(msg.data, EpochMarker)
            except DecodeError as exc:
                raise StorageError(f"an unreadable epoch marker at sequence {seq}: {exc}") from None
            self.epoch, self.active = marker.epoch, marker
            log.info("standby.new_epoch", epoch=marker.epoch, active=marker.node_id, commit_no=marker.commit_no)
            if marker.commit_no not in (stream.CONTINUES, self.commit_no):
                # That coordinator started from a database other than the stream's end (a restore,
                # or commits of its own that never reached the stream): its snapshot is the truth.
                raise ResyncNeeded(
                    f"epoch {marker.epoch} started at commit {marker.commit_no}, this copy is at {self.commit_no}"
                )
            return
        commit_no = int(headers.get(stream.H_COMMIT, "0"))
        index, _, count = headers.get(stream.H_PART, "1/1").partition("/")
        self._parts.append(msg.data)
        self.stream_seq = seq
        if int(index) < int(count):
            return
        data, self._parts = b"".join(self._parts), []
        if commit_no <= self.commit_no:
            return  # already in the snapshot
        if commit_no != self.commit_no + 1:
            raise ResyncNeeded(f"commit {commit_no} follows commit {self.commit_no}")
        commit = decode_commit(data)
        assert self.db is not None, "bootstrap() first"
        await self.db.apply_replicated(commit)
        self.commit_no = commit.commit_no
        self.applied_at = time.time()


def _replace_file(path: Path, data: bytes) -> int:
    """The database file replaced by `data`, with no write-ahead log of the old one left beside it;
    returns the snapshot's schema version. One of another schema version replaces nothing."""
    incoming = Path(f"{path}.incoming")
    path.parent.mkdir(parents=True, exist_ok=True)
    incoming.write_bytes(data)
    schema = _schema_version(incoming)
    if schema != LATEST_VERSION:
        incoming.unlink()
        return schema
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    incoming.rename(path)
    return schema


def _schema_version(path: Path) -> int:
    """The schema version recorded in the database file at `path` (0: none), read without writing."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    except sqlite3.DatabaseError:
        return 0
    finally:
        conn.close()
    return int(row[0] or 0)
