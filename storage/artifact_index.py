"""The artifacts table: which task produced which stored object, until when it is kept.

The objects themselves live in the artifact store (`storage/artifacts/`), addressed by content, so
several rows may reference one object; the TTL job deletes an object only once no row references
it. Rows are written with their task's batch (`WriteBatch.artifacts`); this module reads them and
drops the expired ones.
"""

from __future__ import annotations

import sqlite3

from common.models import ArtifactView
from storage.database import Database
from storage.sql import chunks, placeholders


class ArtifactIndex:
    """Reads of the artifacts table, for the API and the TTL job; the TTL job's deletes."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def artifacts_of(self, task_id: str) -> list[ArtifactView]:
        """A task's artifacts, oldest first."""
        rows = await self._db.fetch_all("SELECT * FROM artifacts WHERE task_id = ? ORDER BY id", (task_id,))
        return [_artifact_view(r) for r in rows]

    async def artifacts_page(
        self, task_id: str, *, after: int, limit: int
    ) -> tuple[list[tuple[int, ArtifactView]], int]:
        """Up to `limit` of a task's artifacts with row id above `after`, oldest first, as (row id,
        view); and how many the task has in all."""
        rows = await self._db.fetch_all(
            "SELECT * FROM artifacts WHERE task_id = ? AND id > ? ORDER BY id LIMIT ?", (task_id, after, limit)
        )
        total = await self._db.fetch_one("SELECT COUNT(*) FROM artifacts WHERE task_id = ?", (task_id,))
        return [(r["id"], _artifact_view(r)) for r in rows], 0 if total is None else int(total[0])

    async def drop_expired_artifacts(self, now: float) -> list[tuple[str, str]]:
        """Delete the rows of expired artifacts; returns the (sha256, key) of objects no row references now."""
        rows = await self._db.fetch_all_writer(
            "SELECT id, sha256, key FROM artifacts WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
        )
        if not rows:
            return []
        await self._db.write([("DELETE FROM artifacts WHERE id = ?", [(r["id"],) for r in rows])])
        candidates = {r["sha256"]: r["key"] for r in rows}
        referenced = await self.referenced_among(list(candidates))
        return [(sha, key) for sha, key in candidates.items() if sha not in referenced]

    async def referenced_among(self, sha256s: list[str]) -> set[str]:
        """Which of these contents some artifact row references."""
        found: set[str] = set()
        for chunk in chunks(sha256s):
            rows = await self._db.fetch_all_writer(
                f"SELECT DISTINCT sha256 FROM artifacts WHERE sha256 IN ({placeholders(len(chunk))})", chunk
            )
            found.update(r[0] for r in rows)
        return found

    async def is_referenced(self, sha256: str) -> bool:
        """Whether any artifact row references these bytes."""
        rows = await self._db.fetch_all_writer("SELECT 1 FROM artifacts WHERE sha256 = ? LIMIT 1", (sha256,))
        return bool(rows)


def _artifact_view(r: sqlite3.Row) -> ArtifactView:
    return ArtifactView(
        task_id=r["task_id"],
        attempt=r["attempt"],
        name=r["name"],
        size=r["size"],
        sha256=r["sha256"],
        content_type=r["content_type"],
        backend=r["backend"],
        key=r["key"],
        created_at=r["created_at"],
        expires_at=r["expires_at"],
    )
