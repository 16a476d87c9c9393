"""The coordinator's own hooks: its table of periodic jobs and its after-commit listeners.

Every recurring thing the coordinator does on its own is one row of `jobs` (a feature family adds
rows of its own the same way: coordinator/plugins.py). Intervals come from the config where an
operator may want to tune them, else from the constants here.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common.config import ClawConfig
from common.log import get_logger
from coordinator import alerts
from coordinator.broadcast import TaskBroadcast
from coordinator.node_liveness import NodeLiveness
from coordinator.periodic_jobs import PeriodicJob
from storage.backup import create_backup, prune_scheduled, scheduled_name

if TYPE_CHECKING:
    from coordinator.service import Coordinator

log = get_logger("coordinator.backup")

# Commits never checkpoint the write-ahead log (storage/database.py); this job does.
CHECKPOINT_INTERVAL_S = 1.0
# How often node liveness is judged: a dead node's tasks are reclaimed within this of its timeout.
NODE_CHECK_INTERVAL_S = 0.25
RECOVERY_INTERVAL_S = 5.0


def jobs(c: Coordinator) -> list[PeriodicJob]:
    """The coordinator's periodic jobs."""
    settings, artifacts = c.config.coordinator, c.config.artifacts
    liveness = NodeLiveness(
        c.conn,
        c.registry,
        c.operations,
        reclaim=settings.reclaim_on_node_loss,
        reconnect_wait_s=c.config.nats.reconnect_wait_s,
    )
    table = [
        PeriodicJob("wal-checkpoint", CHECKPOINT_INTERVAL_S, c.db.checkpoint, first_after_s=CHECKPOINT_INTERVAL_S,
                    writes=False),
        PeriodicJob("node-liveness", NODE_CHECK_INTERVAL_S, liveness.check),
        PeriodicJob("republish-pending", settings.republish_after_s / 2, c.pipeline.republish_pending),
        PeriodicJob("recover-lost-messages", RECOVERY_INTERVAL_S, c.operations.recover_lost_messages),
        PeriodicJob("expire-approvals", RECOVERY_INTERVAL_S, c.approvals.expire),
        PeriodicJob("anchor-audit-log", RECOVERY_INTERVAL_S, c.auditor.anchor),
        PeriodicJob("expire-artifacts", artifacts.cleanup_interval_s, c.janitor.sweep),
        PeriodicJob("alerts", settings.alert_interval_s, c.alerts.evaluate),
    ]  # fmt: skip
    if artifacts.orphan_sweep_interval_s:  # listing the store is not a start-up job
        every_s = artifacts.orphan_sweep_interval_s
        table.append(PeriodicJob("sweep-orphan-artifacts", every_s, c.janitor.sweep_orphans, first_after_s=every_s))
    if settings.backup_dir:
        every_s = settings.backup_interval_s
        table.append(
            PeriodicJob("backup", every_s, ScheduledBackups(c.config).run, first_after_s=every_s, writes=False)
        )
    if c.metrics is not None:
        table.append(PeriodicJob("metrics-gauges", settings.metrics_refresh_s, c.refresh_metrics, writes=False))
    return table


def register(c: Coordinator) -> None:
    """Add the coordinator's own periodic jobs and after-commit listeners."""
    for job in jobs(c):
        c.jobs.add(job)
    c.listeners.add("broadcast", TaskBroadcast(c.conn).on_commits)
    c.listeners.add_inline("alert-log", alerts.announce)
    if c.metrics is not None:
        c.listeners.add_inline("metrics", c.metrics.on_commit)


class ScheduledBackups:
    """The `backup` job: a backup folder under `coordinator.backup_dir`, the oldest beyond
    `backup_keep` deleted (the copying runs in a thread: it is file I/O)."""

    def __init__(self, config: ClawConfig) -> None:
        self._config = config

    async def run(self) -> Path:
        """Make one backup; returns its folder."""
        settings = self._config.coordinator
        directory = Path(settings.backup_dir or ".")
        target = directory / scheduled_name(time.time())
        manifest = await asyncio.to_thread(create_backup, self._config, target)
        pruned = await asyncio.to_thread(prune_scheduled, directory, settings.backup_keep)
        log.info("backup.created", path=str(target), tasks=manifest.tasks, events=manifest.events, pruned=len(pruned))
        return target
