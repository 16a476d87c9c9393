"""The replication stream `<PREFIX>_REPL` and the snapshot store `<prefix>_repl`: names and set-up.

Messages on `<prefix>.repl` (headers name what each is):
- a commit, or one part of a big one: `Claw-Commit: N`, `Claw-Part: i/n`, `Claw-Epoch: E`, msg id
  `E:N:i`, body = `storage.replication.encode_commit` (split in parts below the payload limit);
- an epoch marker, published by a coordinator that became active (epoch E = its lease revision):
  `Claw-Marker: epoch`, body = `EpochMarker`. Every later publish of that coordinator expects the
  stream's last sequence to be its own previous message (`Nats-Expected-Last-Sequence`), so a former
  active that wakes up after the marker cannot append anything: the stream refuses it (10071).

The snapshot store holds one object, `snapshot`: an online copy of the active's database and, in its
description, the commit number and stream sequence it includes (`SnapshotInfo`).

Every message and the snapshot carry an HMAC (`Claw-Mac`, `SnapshotInfo.mac`) under a key derived
from the coordinator's audit key (`<db dir>/auth/audit.nk`), which every coordinator of a prefix
shares: a standby executes what it reads, so a message anyone else published on `<prefix>.repl` (a
worker's credentials, an open bus) is refused, never applied.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import msgspec
from nats.js import api
from nats.js.errors import APIError, BucketNotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from common.config import CoordinatorSettings, JetStreamSettings
from communication.connection import NatsConnection
from communication.topology import replicas_for
from storage.audit_anchor import AnchorSigner, key_path

H_EPOCH = "Claw-Epoch"
H_COMMIT = "Claw-Commit"
H_PART = "Claw-Part"
H_MARKER = "Claw-Marker"
H_MAC = "Claw-Mac"
SNAPSHOT_OBJECT = "snapshot"
# Parts of a commit stay well below the default 1 MiB payload limit (headers included).
PART_BYTES = 768 * 1024
WRONG_LAST_SEQUENCE = 10071
# A standby reports every second; its entry lapses this long after its last report (it died).
STANDBY_TTL_S = 10.0


class EpochMarker(msgspec.Struct, frozen=True, kw_only=True):
    """Who became active at which epoch, and the commit its database held then.

    `commit_no` is `CONTINUES` (-1) when the new active coordinator continues the stream: a standby
    that took over appends its marker first (fencing the former active out) and then applies every
    commit before the marker, so its database is whatever the stream holds up to there. Otherwise it
    started from its own database, at `commit_no`, and stored a snapshot of it.
    """

    epoch: int
    node_id: str
    host: str
    commit_no: int
    at: float


CONTINUES = -1


class SnapshotInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a snapshot holds: every commit up to `commit_no`, every stream message up to `stream_seq`."""

    commit_no: int
    stream_seq: int
    epoch: int
    node_id: str
    created_at: float
    size: int
    mac: str = ""  # of `snapshot_fields` and the database bytes


def replication_key(db_path: str | Path) -> bytes:
    """The HMAC key of this prefix's replication, from the audit key beside the database (created,
    mode-checked, as the coordinator does). Blocking: call it from a thread."""
    path = key_path(db_path)
    AnchorSigner.load_or_create(path)
    return hashlib.sha256(b"claw replication v1\0" + path.read_bytes().strip()).digest()


def mac(key: bytes, label: str, body: bytes) -> str:
    """The HMAC-SHA256 of `label` and `body`, hex."""
    return hmac.new(key, label.encode() + b"\0" + body, hashlib.sha256).hexdigest()


def mac_ok(key: bytes, label: str, body: bytes, given: str | None) -> bool:
    """Whether `given` is the HMAC of `label` and `body` (constant-time)."""
    return given is not None and hmac.compare_digest(mac(key, label, body), given)


def commit_label(epoch: str, commit_no: str, part: str) -> str:
    """What a commit part's HMAC covers besides its body: its epoch, number and part."""
    return f"commit:{epoch}:{commit_no}:{part}"


def marker_label(epoch: str) -> str:
    """What an epoch marker's HMAC covers besides its body."""
    return f"marker:{epoch}"


def snapshot_label(info: SnapshotInfo) -> str:
    """What a snapshot's HMAC covers besides the database bytes."""
    return f"snapshot:{info.commit_no}:{info.stream_seq}:{info.epoch}"


class StandbyStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A standby's report (KV `<prefix>_standbys`, key `standby.<node id>`): where its copy is."""

    node_id: str
    host: str
    pid: int
    since: float
    commit_no: int  # the last commit applied
    stream_seq: int  # the last stream message looked at
    lag_msgs: int  # stream messages not applied yet, when it reported
    applied_at: float | None  # when it applied its last commit
    epoch: int  # the newest epoch marker it saw
    at: float  # when it reported


def standby_key(node_id: str) -> str:
    """The KV key of a standby's report (node ids are subject-safe tokens)."""
    return "standby." + node_id.replace(".", "_")


async def standbys_kv(conn: NatsConnection, js_settings: JetStreamSettings) -> KeyValue:
    """The bucket of standby reports (created if missing); entries lapse `STANDBY_TTL_S` after their last write."""
    bucket = f"{conn.subjects.prefix}_standbys"
    try:
        return await conn.js.key_value(bucket)
    except BucketNotFoundError:
        return await conn.js.create_key_value(
            bucket=bucket,
            description="standby coordinators' positions in the replication stream",
            history=1,
            ttl=STANDBY_TTL_S,
            storage=api.StorageType.MEMORY,
            replicas=replicas_for(js_settings, conn),
        )


def stream_name(conn: NatsConnection) -> str:
    """`<PREFIX>_REPL`."""
    return f"{conn.subjects.upper}_REPL"


def subject(conn: NatsConnection) -> str:
    """`<prefix>.repl`."""
    return f"{conn.subjects.prefix}.repl"


def snapshot_bucket(conn: NatsConnection) -> str:
    """`<prefix>_repl`."""
    return f"{conn.subjects.prefix}_repl"


async def ensure_stream(conn: NatsConnection, js_settings: JetStreamSettings, settings: CoordinatorSettings) -> None:
    """Create (or update) the replication stream."""
    config = api.StreamConfig(
        name=stream_name(conn),
        description="committed transactions of the active coordinator, for its standbys",
        subjects=[subject(conn)],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        num_replicas=replicas_for(js_settings, conn),
        max_age=settings.replication_max_age_s,
        duplicate_window=min(js_settings.duplicate_window_s, settings.replication_max_age_s),
    )
    try:
        await conn.js.add_stream(config)
    except APIError:  # it exists with other settings (a changed max age)
        await conn.js.update_stream(config)


async def snapshot_store(conn: NatsConnection, js_settings: JetStreamSettings) -> ObjectStore:
    """The object store holding the newest snapshot (created if missing)."""
    bucket = snapshot_bucket(conn)
    try:
        return await conn.js.object_store(bucket)
    except BucketNotFoundError:
        return await conn.js.create_object_store(
            bucket=bucket,
            config=api.ObjectStoreConfig(
                description="the newest snapshot of the active coordinator's database",
                storage=api.StorageType.FILE,
                replicas=replicas_for(js_settings, conn),
            ),
        )
