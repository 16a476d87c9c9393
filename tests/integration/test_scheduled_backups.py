"""The coordinator's scheduled backups: a backup folder per run, the oldest beyond `backup_keep` gone,
each one restorable (a real state database written by a real coordinator)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from common.config import ClawConfig
from coordinator.maintenance import ScheduledBackups
from storage.backup import SCHEDULED_PREFIX, read_manifest, restore_backup
from tests.helpers import connected_client, running_coordinator, spec


async def test_scheduled_backups_keep_the_newest_and_each_restores(config: ClawConfig, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    config = msgspec.structs.replace(
        config,
        coordinator=msgspec.structs.replace(config.coordinator, backup_dir=str(backups), backup_keep=2),
    )
    async with running_coordinator(config), connected_client(config) as client:
        made = []
        for n in range(3):
            await client.submit(spec("echo", {"n": n}))
            made.append(await ScheduledBackups(config).run())
    kept = sorted(p.name for p in backups.iterdir())
    assert len(kept) == 2 and all(name.startswith(SCHEDULED_PREFIX) for name in kept)
    newest = backups / kept[-1]
    assert read_manifest(newest).tasks == 3
    result = restore_backup(newest, db_path=tmp_path / "restored" / "claw.db", artifacts_dir=None)
    assert result.manifest.tasks == 3 and result.db_path.exists()
