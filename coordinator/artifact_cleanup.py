"""The artifact TTL job: expired metadata rows go, and then the objects nobody references any more.

Objects are shared by content, so an object is deleted only when no row references its sha256, and
only if it was not stored (or re-stored by a dedupe hit) within `artifacts.cleanup_grace_s`: a
worker may have put the bytes and not yet had its row recorded.
"""

from __future__ import annotations

from common.clock import Clock
from common.errors import ArtifactError
from common.log import get_logger
from storage.artifacts import ArtifactStore
from storage.task_store import TaskStore

log = get_logger("coordinator.artifacts")


class ArtifactJanitor:
    """Removes expired artifacts."""

    def __init__(self, store: ArtifactStore, tasks: TaskStore, clock: Clock, *, grace_s: float) -> None:
        self._store = store
        self._tasks = tasks
        self._clock = clock
        self._grace_s = grace_s

    async def sweep(self) -> int:
        """One pass; returns how many objects were deleted."""
        now = self._clock.now()
        unreferenced = await self._tasks.drop_expired_artifacts(now)
        deleted = 0
        for sha256, key in unreferenced:
            try:
                info = await self._store.stat(key)
                if info is None or now - info.modified < self._grace_s:
                    continue
                if await self._tasks.is_referenced(sha256):
                    continue  # a new row appeared meanwhile
                await self._store.delete(key)
                deleted += 1
            except ArtifactError as exc:
                log.warning("artifacts.cleanup_failed", key=key, error=str(exc))
        if unreferenced:
            log.info("artifacts.expired", unreferenced=len(unreferenced), deleted=deleted)
        return deleted
