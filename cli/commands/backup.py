"""`claw backup create|restore`: a backup of the state database, artifacts and config, and its restore."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.context import command_config
from cli.options import ConfigFlag, JsonFlag
from cli.output import emit_fields, emit_json, fmt_time
from cli.runner import fail
from common.errors import ClawError

group = typer.Typer(help="Backups of the cluster's state, and restoring them.", no_args_is_help=True)

DbOption = Annotated[Path | None, typer.Option("--db", help="The state database.", show_default=".claw/claw.db")]


@group.command("create")
def backup_create(
    ctx: typer.Context,
    target: Annotated[Path, typer.Argument(help="A new or empty folder for the backup.")],
    config: ConfigFlag = None,
    db: DbOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Back up the state database (an online, consistent copy), the artifacts and the config file."""
    from storage.backup import create_backup

    cfg = command_config(ctx, config, coordinator={"db_path": None if db is None else str(db)})
    try:
        manifest = create_backup(cfg, target, config_files=[config] if config else [])
    except (ClawError, OSError) as exc:
        fail(f"backup failed: {exc}", kind=getattr(exc, "code", "storage"))
    if json_out:
        emit_json({"path": str(target), **_fields(manifest)})
        return
    emit_fields([("backup", str(target)), *_fields(manifest).items()])


@group.command("restore")
def backup_restore(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="A folder made by `claw backup create`.")],
    config: ConfigFlag = None,
    db: DbOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing database and artifact store.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Restore a backup onto an empty data dir (stop the coordinator first).

    The next coordinator start puts the queued tasks back into the queue.
    """
    from storage.backup import restore_backup

    cfg = command_config(ctx, config, coordinator={"db_path": None if db is None else str(db)})
    artifacts_dir = Path(cfg.artifacts.local_dir) if cfg.artifacts.backend == "local" else None
    try:
        result = restore_backup(source, db_path=Path(cfg.coordinator.db_path), artifacts_dir=artifacts_dir, force=force)
    except (ClawError, OSError) as exc:
        fail(f"restore failed: {exc}", kind=getattr(exc, "code", "storage"))
    restored = {
        "database": str(result.db_path),
        "artifacts": str(result.artifacts_dir) if result.artifacts_dir else f"bucket {result.manifest.bucket}",
        **_fields(result.manifest),
        "next": "start the coordinator: queued tasks go back into the queue, running ones run again",
    }
    if json_out:
        emit_json(restored)
        return
    emit_fields(list(restored.items()))


def _fields(manifest: object) -> dict[str, object]:
    from storage.backup import BackupManifest

    assert isinstance(manifest, BackupManifest)
    return {
        "created": fmt_time(manifest.created_at),
        "claw version": manifest.claw_version,
        "prefix": manifest.prefix,
        "tasks": manifest.tasks,
        "events": manifest.events,
        "artifacts kept": "copied" if manifest.artifacts == "copied" else f"in bucket {manifest.bucket}",
        "config files": ", ".join(manifest.config_files) or "none",
    }


def register(app: typer.Typer) -> None:
    """Add `claw backup ...`."""
    app.add_typer(group, name="backup")
