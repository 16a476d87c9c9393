"""The skill registry table: every installed or built-in skill version and whether it is enabled."""

from __future__ import annotations

import msgspec

from common.skills import RegistryEntry, SkillManifest
from storage.database import Database

UPSERT_SKILL = """
INSERT INTO skills (name, version, manifest, checksum, source, enabled, archive, installed_at, archive_sha256)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name, version) DO UPDATE SET
    manifest = excluded.manifest, checksum = excluded.checksum, source = excluded.source,
    enabled = excluded.enabled, archive = excluded.archive, archive_sha256 = excluded.archive_sha256
"""

_manifest_decoder = msgspec.json.Decoder(SkillManifest)


class SkillStore:
    """Reads and writes of the `skills` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def all(self) -> list[RegistryEntry]:
        """Every registered skill version, by name then install time."""
        rows = await self._db.fetch_all_writer("SELECT * FROM skills ORDER BY name, installed_at")
        return [
            RegistryEntry(
                name=r["name"],
                version=r["version"],
                enabled=bool(r["enabled"]),
                source=r["source"],
                checksum=r["checksum"],
                manifest=_manifest_decoder.decode(r["manifest"]),
                archive=r["archive"],
                installed_at=r["installed_at"],
                archive_sha256=r["archive_sha256"],
            )
            for r in rows
        ]

    async def save(self, entries: list[RegistryEntry]) -> None:
        """Insert or update entries, in one transaction."""
        rows = [
            (
                e.name,
                e.version,
                msgspec.json.encode(e.manifest).decode(),
                e.checksum,
                e.source,
                int(e.enabled),
                e.archive,
                e.installed_at,
                e.archive_sha256,
            )
            for e in entries
        ]
        await self._db.write([(UPSERT_SKILL, rows)])
