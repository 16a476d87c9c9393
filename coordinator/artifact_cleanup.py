"""The artifact TTL job: expired metadata rows go, and then the objects nobody references any more.

Objects are shared by content, so an object is deleted only when no row references its sha256, and
only if it was not stored (or re-stored by a dedupe hit) within `artifacts.cleanup_grace_s`: a
worker may have put the bytes and not yet had its row recorded.

Less often (`artifacts.orphan_sweep_interval_s`) the whole store is listed to find orphans: objects
that never got a row (a worker killed after its put, a CLI whose submit was refused after it stored
a large input) and the temporary files of killed writers.
"""

from __future__ import annotations

from common.clock import Clock
from common.errors import ArtifactError
from common.log import get_logger
from storage.artifact_index import ArtifactIndex
from storage.artifacts import ArtifactStore, ObjectInfo

log = get_logger("coordinator.artifacts")

# Listed objects are checked against the artifacts table this many at a time.
ORPHAN_BATCH = 500


class ArtifactJanitor:
    """Removes expired artifacts."""

    def __init__(self, store: ArtifactStore, tasks: ArtifactIndex, clock: Clock, *, grace_s: float) -> None:
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

    async def sweep_orphans(self) -> int:
        """List the store and delete objects no row references that are older than the grace period."""
        now = self._clock.now()
        deleted = 0
        try:
            await self._store.remove_stale_uploads(self._grace_s)
            batch: list[ObjectInfo] = []
            async for info in self._store.iter_objects():
                if now - info.modified >= self._grace_s:
                    batch.append(info)
                if len(batch) >= ORPHAN_BATCH:
                    deleted += await self._delete_orphans(batch, now)
                    batch = []
            deleted += await self._delete_orphans(batch, now)
        except ArtifactError as exc:
            log.warning("artifacts.orphan_sweep_failed", error=str(exc))
        if deleted:
            log.info("artifacts.orphans_deleted", deleted=deleted)
        return deleted

    async def _delete_orphans(self, batch: list[ObjectInfo], now: float) -> int:
        if not batch:
            return 0
        referenced = await self._tasks.referenced_among([info.sha256 for info in batch])
        deleted = 0
        for info in batch:
            if info.sha256 in referenced:
                continue
            fresh = await self._store.stat(info.key)  # a dedupe hit may have just re-stored it
            if fresh is None or now - fresh.modified < self._grace_s or await self._tasks.is_referenced(info.sha256):
                continue
            await self._store.delete(info.key)
            deleted += 1
        return deleted
