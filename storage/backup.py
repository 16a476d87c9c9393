"""Backups of a cluster's state that restore: the state database, the artifacts and the configuration.

A backup is a folder:

- `claw.db`: an online, consistent copy of the state database made with SQLite's backup API (safe
  while the coordinator writes: it copies one snapshot), checked with `quick_check`;
- `artifacts/`: the local artifact store's files (for MinIO/S3 the manifest records the bucket:
  objects stay where they are, protected by the bucket's own versioning or replication);
- `config/`: the configuration files given;
- `backup.json`: the manifest (when, which version, which prefix, how many tasks and events).

The JetStream streams are not copied: the database is the source of truth, and what the streams
held is rebuilt from it on the first start after a restore (queued tasks whose message is not in the
queue are published again; tasks that were running are found lost by the offline-node check and run
again). A restore writes a marker next to the database (`<db>.restored`) that tells the coordinator
to do that reconciliation once.

Functions here are blocking (file copies): call them from a thread on an event loop.
"""

from __future__ import annotations

import datetime
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from common import __version__
from common.config import ClawConfig
from common.errors import StorageError
from storage.sqlite_errors import describe_sqlite_error

MANIFEST = "backup.json"
DB_FILE = "claw.db"
ARTIFACTS_DIR = "artifacts"
CONFIG_DIR = "config"
RESTORED_SUFFIX = ".restored"
FORMAT = 1
# Scheduled backups are folders named claw-backup-<UTC time> under the configured directory.
SCHEDULED_PREFIX = "claw-backup-"


class BackupManifest(msgspec.Struct, frozen=True, kw_only=True):
    """What a backup folder holds (`backup.json`)."""

    format: int = FORMAT
    created_at: float
    claw_version: str
    prefix: str
    schema_version: int
    tasks: int
    events: int
    # "copied": the local store's files are under artifacts/; "bucket": they stay in `bucket`.
    artifacts: str
    bucket: str | None = None
    config_files: list[str] = []


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore wrote."""

    manifest: BackupManifest
    db_path: Path
    artifacts_dir: Path | None


def create_backup(config: ClawConfig, target: Path, *, config_files: list[Path] | None = None) -> BackupManifest:
    """Write a backup of the cluster `config` describes into `target` (new or empty)."""
    db_path = Path(config.coordinator.db_path)
    if not db_path.exists():
        raise StorageError(f"no state database at {db_path}: nothing to back up (point --db at it)")
    if target.exists() and any(target.iterdir()):
        raise StorageError(f"{target} is not empty: a backup goes into a new or empty folder")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        schema, tasks, events = _copy_database(db_path, partial / DB_FILE)
        if config.artifacts.backend == "local" and Path(config.artifacts.local_dir).exists():
            shutil.copytree(config.artifacts.local_dir, partial / ARTIFACTS_DIR)
            artifacts, bucket = "copied", None
        elif config.artifacts.backend == "local":
            artifacts, bucket = "copied", None
            (partial / ARTIFACTS_DIR).mkdir()
        else:
            artifacts, bucket = "bucket", config.artifacts.bucket
        copied = []
        for path in config_files or []:
            (partial / CONFIG_DIR).mkdir(exist_ok=True)
            shutil.copy2(path, partial / CONFIG_DIR / path.name)
            copied.append(path.name)
        manifest = BackupManifest(
            created_at=time.time(),
            claw_version=__version__,
            prefix=config.nats.prefix,
            schema_version=schema,
            tasks=tasks,
            events=events,
            artifacts=artifacts,
            bucket=bucket,
            config_files=copied,
        )
        (partial / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
        if target.exists():
            target.rmdir()
        partial.rename(target)  # whole or not at all: a crash leaves only the .partial folder
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def read_manifest(source: Path) -> BackupManifest:
    """The manifest of the backup in `source`, or a clear error when it is not one."""
    try:
        manifest = msgspec.json.decode((source / MANIFEST).read_bytes(), type=BackupManifest)
    except FileNotFoundError:
        raise StorageError(f"{source} is not a claw backup (no {MANIFEST})") from None
    except msgspec.DecodeError as exc:
        raise StorageError(f"{source / MANIFEST} is not a valid backup manifest: {exc}") from None
    if manifest.format > FORMAT:
        raise StorageError(f"the backup in {source} has format {manifest.format}: upgrade claw to restore it")
    return manifest


def restore_backup(source: Path, *, db_path: Path, artifacts_dir: Path | None, force: bool = False) -> RestoreResult:
    """Restore the backup in `source` onto an empty data dir: the database at `db_path` and, for a
    backup of a local store, the artifacts into `artifacts_dir`."""
    manifest = read_manifest(source)
    if db_path.exists() and not force:
        raise StorageError(
            f"{db_path} exists: a backup restores onto an empty data dir (move it aside, or --force to replace it)"
        )
    copied_artifacts = manifest.artifacts == "copied" and (source / ARTIFACTS_DIR).exists()
    if copied_artifacts and artifacts_dir is not None and artifacts_dir.exists() and any(artifacts_dir.iterdir()):
        if not force:
            raise StorageError(f"{artifacts_dir} is not empty: restore onto an empty artifact store (or --force)")
        shutil.rmtree(artifacts_dir)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    _copy_database(source / DB_FILE, db_path)
    if copied_artifacts and artifacts_dir is not None:
        shutil.copytree(source / ARTIFACTS_DIR, artifacts_dir, dirs_exist_ok=True)
    restored_marker(db_path).write_bytes(msgspec.json.encode(manifest))
    return RestoreResult(manifest, db_path, artifacts_dir if copied_artifacts else None)


def restored_marker(db_path: Path | str) -> Path:
    """The file that tells the coordinator its database was just restored (reconcile the queue once)."""
    return Path(f"{db_path}{RESTORED_SUFFIX}")


def scheduled_name(at: float) -> str:
    """`claw-backup-20261205T163000.123Z`: sorts by time."""
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return f"{SCHEDULED_PREFIX}{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z"


def prune_scheduled(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` scheduled backups in `directory`; returns what was deleted."""
    backups = sorted(p for p in directory.glob(SCHEDULED_PREFIX + "*Z") if p.is_dir())
    old = backups[:-keep] if keep > 0 else backups
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


def _copy_database(source: Path, target: Path) -> tuple[int, int, int]:
    """Copy one consistent snapshot of `source` into `target`; check it; (schema, tasks, events)."""
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
                if dst.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise StorageError(f"the copy of {source} fails SQLite's quick_check: the source is damaged")
                schema = dst.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
                tasks = dst.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
                events = dst.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot copy the state database {source}: {describe_sqlite_error(exc)}") from None
    os.chmod(target, 0o600)
    return int(schema), int(tasks), int(events)
