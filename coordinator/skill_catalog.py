"""The skill registry, as the coordinator keeps it: SQLite is the record, KV the workers' copy.

- Built-in skills are registered from their shipped manifests at start-up (enabled, unless an
  operator disabled them).
- `claw skills install` uploads a skill folder to the skill-code object store and registers it
  here; installing a version that exists with another checksum is refused, the same checksum is a
  no-op. A new version becomes the enabled one; one version per name is enabled at a time.
- Installing is guarded (issue 11, item 4): built-in names are reserved (a package calling itself
  `shell.exec` would replace the built-in tool on every worker); a version may not declare a lower
  risk than the highest of the skill's registered versions unless the admin passes
  `allow_risk_change`, which is recorded as `skill.risk_lowered`; and the coordinator hashes the
  archive the store holds (`archive_sha256`), which workers check before they unpack it.
- Enable and disable flip a version. Skills that workers run from code, without a registry entry,
  are registered (source `worker`) the first time someone disables them.
- Every change is an event in the hash-chained event log (task id `skill:<name>`), and a new
  snapshot is put in KV `<prefix>_skills`, which workers read every heartbeat: a disabled skill stops
  being pulled within one heartbeat, without restarting anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from common.clock import Clock
from common.errors import InvalidInputError
from common.event_kinds import EventKind
from common.log import get_logger
from common.skills import (
    RegistryEntry,
    RegistrySnapshot,
    SkillManifest,
    archive_sha256,
    builtin_manifests,
    compiled_validator,
    manifest_checksum,
    reserved_names,
)
from communication.codec import encode
from communication.connection import NATS_ERRORS
from storage.records import EventRecord, WriteBatch
from storage.skill_store import SkillStore
from storage.task_writer import TaskWriter

log = get_logger("coordinator.skills")

SNAPSHOT_KEY = "registry"


class SkillCatalog:
    """Registered skill versions, and what is enabled."""

    def __init__(
        self,
        store: SkillStore,
        tasks: TaskWriter,
        kv: KeyValue,
        clock: Clock,
        *,
        skill_code: Callable[[], Awaitable[ObjectStore]] | None = None,
    ) -> None:
        self._store = store
        self._tasks = tasks
        self._kv = kv
        self._clock = clock
        # Where installed skills' archives are (None: installs cannot be hashed, and are refused).
        self._skill_code = skill_code
        self._entries: dict[tuple[str, str], RegistryEntry] = {}
        self._revision = 0

    async def load(self) -> None:
        """Read the registry, register built-ins that are new, and publish the snapshot."""
        self._entries = {(e.name, e.version): e for e in await self._store.all()}
        fresh = []
        for manifest in builtin_manifests():
            if (manifest.name, manifest.version) in self._entries:
                continue
            others = [e for e in self._entries.values() if e.name == manifest.name]
            entry = RegistryEntry(
                name=manifest.name,
                version=manifest.version,
                # A newer built-in replaces an older one, unless an operator chose another version.
                enabled=not others or any(e.enabled and e.source == "builtin" for e in others),
                source="builtin",
                checksum=manifest_checksum(manifest),
                manifest=manifest,
                installed_at=self._clock.now(),
            )
            fresh.append(entry)
            for other in others:
                if other.source == "builtin" and entry.enabled:
                    fresh.append(msgspec.structs.replace(other, enabled=False))
        if fresh:
            await self._save(fresh, [self._event(e, EventKind.SKILL_REGISTERED, by="coordinator") for e in fresh])
        await self.publish()
        # Built now, not inside the first submit: the first one imports jsonschema (about 60 ms,
        # with the event loop held) and compiles the skill's schema.
        await asyncio.to_thread(self._compile_validators)

    def _compile_validators(self) -> None:
        for entry in self._entries.values():
            if entry.enabled:
                compiled_validator(entry.manifest)

    # --- reads ------------------------------------------------------------------------------------

    def entries(self) -> list[RegistryEntry]:
        """Every registered version, by name."""
        return sorted(self._entries.values(), key=lambda e: (e.name, e.installed_at))

    def enabled(self, name: str) -> RegistryEntry | None:
        """The enabled version of a skill, if any."""
        return next((e for e in self._entries.values() if e.name == name and e.enabled), None)

    def known(self, name: str) -> bool:
        """Whether any version of `name` is registered."""
        return any(e.name == name for e in self._entries.values())

    def versions(self, name: str) -> list[RegistryEntry]:
        """All versions of a skill, oldest first."""
        return [e for e in self.entries() if e.name == name]

    def search(self, text: str) -> list[RegistryEntry]:
        """Enabled-or-not skills whose name, description or capabilities mention every word of `text`."""
        words = text.lower().split()
        found = []
        for entry in self.entries():
            m = entry.manifest
            haystack = " ".join([m.name, m.description, *m.capabilities, m.risk.value]).lower()
            if all(word in haystack for word in words):
                found.append(entry)
        return found

    # --- changes ----------------------------------------------------------------------------------

    async def install(
        self,
        manifest: SkillManifest,
        *,
        checksum: str,
        archive: str,
        by: str | None,
        uploaded_sha256: str | None = None,
        allow_risk_change: bool = False,
    ) -> tuple[RegistryEntry, bool]:
        """Register an uploaded skill; returns (entry, whether it was new).

        Refused: a built-in's name; a version with other files than the registered one of the same
        version; a lower risk than the highest registered version's without `allow_risk_change`; an
        archive the store does not hold, or holds with other bytes than the uploader hashed."""
        if manifest.name in reserved_names():
            raise InvalidInputError(
                f"'{manifest.name}' is the name of a built-in skill and is reserved: a package cannot "
                f"install {manifest.key()}; give your skill another name in its skill.yaml"
            )
        existing = self._entries.get((manifest.name, manifest.version))
        if existing is not None:
            if existing.checksum != checksum:
                raise InvalidInputError(
                    f"{manifest.key()} is already installed with other contents (checksum "
                    f"{existing.checksum[:12]}, this folder {checksum[:12]}); give the changed skill a new version"
                )
            return existing, False
        lowered_from = self._risk_lowered_from(manifest, allow_risk_change)
        digest = await self._archive_digest(manifest, archive, uploaded_sha256)
        entry = RegistryEntry(
            name=manifest.name,
            version=manifest.version,
            enabled=True,
            source="installed",
            checksum=checksum,
            manifest=manifest,
            archive=archive,
            installed_at=self._clock.now(),
            archive_sha256=digest,
        )
        changed = [entry] + [
            msgspec.structs.replace(e, enabled=False) for e in self.versions(manifest.name) if e.enabled
        ]
        events = [self._event(entry, EventKind.SKILL_INSTALLED, by=by, checksum=checksum, archive_sha256=digest)]
        if lowered_from is not None:
            events.append(
                self._event(
                    entry,
                    EventKind.SKILL_RISK_LOWERED,
                    by=by,
                    from_risk=lowered_from.manifest.risk.value,
                    to_risk=manifest.risk.value,
                    from_version=lowered_from.version,
                )
            )
            log.warning(
                "skills.risk_lowered",
                skill=manifest.name,
                version=manifest.version,
                from_risk=lowered_from.manifest.risk.value,
                to_risk=manifest.risk.value,
                by=by,
            )
        await self._save(changed, events)
        await self.publish()
        return entry, True

    def _risk_lowered_from(self, manifest: SkillManifest, allowed: bool) -> RegistryEntry | None:
        """The registered version whose risk `manifest` lowers (the riskiest), or None if it lowers none.

        The riskiest enabled version is the baseline (after an allowed lowering, the lowered version
        is); with no version enabled, every registered version counts: otherwise disabling the risky
        version first would launder a lower risk in without the flag."""
        versions = self.versions(manifest.name)
        baseline = [e for e in versions if e.enabled] or versions
        riskiest = max(baseline, key=lambda e: e.manifest.risk.rank, default=None)
        if riskiest is None or manifest.risk.rank >= riskiest.manifest.risk.rank:
            return None
        if not allowed:
            raise InvalidInputError(
                f"{manifest.key()} declares risk {manifest.risk.value}, lower than {riskiest.manifest.risk.value} "
                f"of {riskiest.manifest.key()}; if the new version really is less risky, an admin installs it "
                "with `claw skills install --allow-risk-change` (recorded in the audit log)"
            )
        return riskiest

    async def _archive_digest(self, manifest: SkillManifest, archive: str, uploaded_sha256: str | None) -> str:
        """The sha256 of the archive the skill-code store holds, checked against the uploader's."""
        if self._skill_code is None:
            raise InvalidInputError("this coordinator has no skill-code store: it cannot install skills")
        store = await self._skill_code()
        try:
            result = await store.get(archive)
        except NATS_ERRORS as exc:
            raise InvalidInputError(
                f"the files of {manifest.key()} are not in the skill store ({archive}: {exc}); install again"
            ) from None
        digest = await asyncio.to_thread(archive_sha256, bytes(result.data or b""))
        if uploaded_sha256 is not None and digest != uploaded_sha256:
            raise InvalidInputError(
                f"the archive of {manifest.key()} in the skill store (sha256 {digest[:12]}) is not the one "
                f"uploaded (sha256 {uploaded_sha256[:12]}): it was changed in between; install again"
            )
        return digest

    async def set_enabled(self, name: str, version: str | None, enabled: bool, *, by: str | None) -> RegistryEntry:
        """Enable (one version; the newest if none given) or disable (one or all versions) a skill."""
        versions = self.versions(name)
        if not versions:
            raise InvalidInputError(f"no skill called '{name}' is registered; `claw skills list` shows them")
        if version is not None and not any(e.version == version for e in versions):
            known = ", ".join(e.version for e in versions)
            raise InvalidInputError(f"{name} has no version {version} (registered: {known})")
        if enabled:
            target = version or versions[-1].version
            changed = [msgspec.structs.replace(e, enabled=e.version == target) for e in versions]
        else:
            changed = [
                msgspec.structs.replace(e, enabled=False) for e in versions if version is None or e.version == version
            ]
        changed = [c for c in changed if c.enabled != self._entries[(c.name, c.version)].enabled]
        kind = EventKind.SKILL_ENABLED if enabled else EventKind.SKILL_DISABLED
        subject = next((c for c in changed if c.enabled == enabled), None) or versions[-1]
        if changed:
            await self._save(changed, [self._event(subject, kind, by=by)])
            await self.publish()
        return self._entries[(subject.name, subject.version)]

    async def register_worker_skill(self, manifest: SkillManifest, *, enabled: bool, by: str | None) -> RegistryEntry:
        """Register a skill that workers run from code (so it can be disabled like any other)."""
        entry = RegistryEntry(
            name=manifest.name,
            version=manifest.version,
            enabled=enabled,
            source="worker",
            checksum=manifest_checksum(manifest),
            manifest=manifest,
            installed_at=self._clock.now(),
        )
        await self._save([entry], [self._event(entry, EventKind.SKILL_REGISTERED, by=by)])
        await self.publish()
        return entry

    async def publish(self) -> None:
        """Put the snapshot where workers read it (every heartbeat)."""
        self._revision += 1
        snapshot = RegistrySnapshot(revision=self._revision, skills=self.entries())
        try:
            await self._kv.put(SNAPSHOT_KEY, encode(snapshot))
        except NATS_ERRORS as exc:
            # Workers keep the previous snapshot; the next change (or restart) publishes again.
            log.error("skills.publish_failed", error=str(exc))

    async def _save(self, entries: list[RegistryEntry], events: list[EventRecord]) -> None:
        await self._store.save(entries)
        await self._tasks.write_batch(WriteBatch(events=events))
        for entry in entries:
            self._entries[(entry.name, entry.version)] = entry
        for event in events:
            log.info("skills.changed", kind=event.kind, skill=event.task_id.removeprefix("skill:"))

    def _event(self, entry: RegistryEntry, kind: EventKind, *, by: str | None, **extra: object) -> EventRecord:
        data = {"version": entry.version, "source": entry.source, "by": by, **extra}
        return EventRecord.of(kind, f"skill:{entry.name}", self._clock.now(), data=data)
