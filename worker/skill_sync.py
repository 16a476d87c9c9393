"""Keeping a worker's skills in line with the registry, without a restart.

Every heartbeat interval the worker reads the registry snapshot (KV `<prefix>_skills`, key
`registry`, published by the coordinator). From it:

- a skill disabled in the registry is dropped: the worker stops pulling it (tasks already running
  finish) and no longer advertises it;
- an installed skill enabled in the registry is loaded: its files are fetched from the skill-code
  object store, unpacked into the worker's cache, checked against the registered checksum, and its
  runtime is resolved; an installed version replaces a built-in or older one of the same name;
- a skill whose required labels this worker lacks, or that `--skills` does not name, is not loaded.

Only skills that loaded are advertised, so the coordinator never routes a task to a worker that
cannot run it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from common.aio import wait_any
from common.config import ClawConfig
from common.errors import ClawError, ConfigError
from common.log import get_logger
from common.skills import RegistryEntry, RegistrySnapshot, folder_checksum
from communication.codec import DecodeError, decode
from communication.connection import NATS_ERRORS
from communication.topology import Topology
from worker.puller import TaskPuller
from worker.skills import Skill, SkillRegistry
from worker.skills.loader import labels_allow, skill_from_manifest, unpack_archive

log = get_logger("worker.skills")

SNAPSHOT_KEY = "registry"


class SkillSync:
    """Applies registry snapshots to a worker's active skills and its puller."""

    def __init__(
        self,
        config: ClawConfig,
        topology: Topology,
        kv: KeyValue,
        base: SkillRegistry,
        active: SkillRegistry,
    ) -> None:
        self._config = config
        self._topology = topology
        self._kv = kv
        self._base = base
        self._active = active
        self._cache = Path(config.worker.skill_cache_dir)
        self._restrict = set(config.worker.skills)
        self._revision: int | None = None
        self._failed: set[tuple[str, str]] = set()

    async def initial(self) -> None:
        """Decide the first skill set (before the puller starts); unknown `--skills` names are an error."""
        await self.sync(None)
        missing = sorted(self._restrict - set(self._active.names()))
        if missing:
            available = sorted(set(self._base.names()) | set(self._active.names()))
            raise ConfigError(
                f"this worker cannot run skill(s) {', '.join(missing)}; available: {', '.join(available)}"
            )
        if not self._active.names():
            raise ConfigError("this worker has no skills to run")

    async def run(self, puller: TaskPuller, stopping: asyncio.Event) -> None:
        """Follow the registry until `stopping` is set."""
        interval_s = self._config.worker.heartbeat_interval_s
        while not await wait_any(stopping, timeout_s=interval_s):
            try:
                await self.sync(puller)
            except NATS_ERRORS as exc:
                log.warning("skills.sync_failed", error=str(exc) or type(exc).__name__)

    async def sync(self, puller: TaskPuller | None) -> None:
        """Read the snapshot and, if it changed, apply it."""
        snapshot, revision = await self._read()
        if revision is not None and revision == self._revision:
            return
        desired = await self._desired(snapshot)
        for name in set(self._active.names()) - set(desired):
            self._active.remove(name)
            log.info("skills.dropped", skill=name)
        for skill in desired.values():
            current = self._active.get(skill.name)
            if current is not skill:
                self._active.replace(skill)
                if current is None or current.version != skill.version:
                    log.info("skills.loaded", skill=skill.name, version=skill.version)
        if puller is not None:
            await puller.set_skills(self._active.names())
        self._revision = revision

    async def _read(self) -> tuple[RegistrySnapshot | None, int | None]:
        try:
            entry = await self._kv.get(SNAPSHOT_KEY)
        except KeyNotFoundError:
            return None, None  # no coordinator has published one yet: run the built-in skills
        if entry.value is None:
            return None, entry.revision
        try:
            return decode(entry.value, RegistrySnapshot), entry.revision
        except DecodeError as exc:
            log.error("skills.bad_snapshot", error=str(exc))
            return None, entry.revision

    async def _desired(self, snapshot: RegistrySnapshot | None) -> dict[str, Skill]:
        enabled = snapshot.enabled() if snapshot else {}
        disabled = snapshot.disabled_names() if snapshot else set()
        desired: dict[str, Skill] = {}
        for skill in self._base.all():
            installed = enabled.get(skill.name)
            if skill.name in disabled or (installed is not None and installed.source == "installed"):
                continue
            if not self._restrict or skill.name in self._restrict:
                desired[skill.name] = skill
        for name, entry in enabled.items():
            if entry.source != "installed" or (self._restrict and name not in self._restrict):
                continue
            if not labels_allow(entry.manifest, self._config.worker.labels):
                continue
            loaded = await self._installed(entry)
            if loaded is not None:
                desired[name] = loaded
        return desired

    async def _installed(self, entry: RegistryEntry) -> Skill | None:
        """The loaded skill for an installed entry (loading it on first sight); None if it cannot load."""
        current = self._active.get(entry.name)
        if current is not None and current.manifest is not None and current.version == entry.version:
            return current
        if (entry.name, entry.version) in self._failed:
            return None
        try:
            return await self._load(entry)
        except (ClawError, OSError) as exc:
            self._failed.add((entry.name, entry.version))
            log.error("skills.load_failed", skill=entry.name, version=entry.version, error=str(exc))
            return None

    async def _load(self, entry: RegistryEntry) -> Skill:
        if entry.archive is None:
            raise ConfigError(f"skill {entry.name}@{entry.version} has no files to load")
        folder = self._cache / entry.name / f"{entry.version}-{entry.checksum[:16]}"
        if not folder.exists():
            store = await self._topology.skill_code()
            try:
                result = await store.get(entry.archive)
            except NATS_ERRORS as exc:
                raise ConfigError(f"cannot fetch the files of {entry.name}@{entry.version}: {exc}") from None
            await asyncio.to_thread(unpack_archive, bytes(result.data or b""), folder)
        checksum = await asyncio.to_thread(folder_checksum, folder)
        if checksum != entry.checksum:
            raise ConfigError(
                f"the files of {entry.name}@{entry.version} do not match their registered checksum; not loading them"
            )
        return skill_from_manifest(entry.manifest, self._config, folder=folder)
