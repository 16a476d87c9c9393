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
cannot run it. A load that failed (the files could not be fetched or unpacked, the module raised on
import) is tried again with backoff (1 s, doubling, at most a minute), and each heartbeat reports,
per installed skill, whether this worker loaded the enabled version, failed to (and why), or skipped
it (`skill_loads`): `claw skills install` waits on those reports.

Before unpacking, the archive's sha256 must be the one the coordinator registered at install
(`archive_sha256`): an archive changed in the skill-code store is refused, logged
(`skills.archive_tampered`) and reported as a failed load.

Several worker processes may share one skill cache (`claw up` starts them so): unpacking is atomic
(`unpack_archive`), and a cached folder whose files do not match the registered checksum is moved
aside and unpacked again.
"""

from __future__ import annotations

import asyncio
import random
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from common.aio import wait_any
from common.clock import SYSTEM_CLOCK, Clock
from common.config import ClawConfig
from common.errors import ClawError, ConfigError, SkillArchiveTamperedError
from common.log import get_logger
from common.models import Backoff, SkillLoad
from common.skills import RegistryEntry, RegistrySnapshot, archive_sha256, folder_checksum
from communication.codec import DecodeError, decode
from communication.connection import NATS_ERRORS, credentials_of
from communication.topology import Topology
from worker.puller import TaskPuller
from worker.skills import Skill, SkillRegistry
from worker.skills.loader import discard_folder, labels_allow, skill_from_manifest, unpack_archive

log = get_logger("worker.skills")

SNAPSHOT_KEY = "registry"
# When a failed load is tried again: 1 s, 2 s, 4 s, ... at most a minute; jitter spreads the workers.
LOAD_RETRY = Backoff(base_s=1.0, factor=2.0, max_s=60.0, jitter=0.2)
LOADED, FAILED, SKIPPED = "loaded", "failed", "skipped"


@dataclass(frozen=True, slots=True)
class _LoadFailure:
    """The last failed load of a skill version, and when to try it again (monotonic clock)."""

    version: str
    error: str
    attempts: int
    retry_at: float


class SkillSync:
    """Applies registry snapshots to a worker's active skills and its puller."""

    def __init__(
        self,
        config: ClawConfig,
        topology: Topology,
        kv: KeyValue,
        base: SkillRegistry,
        active: SkillRegistry,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._config = config
        self._clock = clock
        self._topology = topology
        self._kv = kv
        self._base = base
        self._active = active
        self._cache = Path(config.worker.skill_cache_dir)
        self._restrict = set(config.worker.skills)
        # The skill set its credentials bind it to (None: every skill): the server refuses pulls of
        # any other skill's consumer, so those are never loaded.
        self._allowed = credential_skills(config)
        self._revision: int | None = None
        self._failures: dict[str, _LoadFailure] = {}
        # What the heartbeats report: installed skills by name, loaded, failed or skipped here.
        self.loads: dict[str, SkillLoad] = {}

    async def initial(self) -> None:
        """Decide the first skill set (before the puller starts); unknown `--skills` names are an error."""
        if self._allowed is not None and (beyond := sorted(self._restrict - self._allowed)):
            raise ConfigError(
                f"this worker's credentials allow only the skill(s) {', '.join(sorted(self._allowed))}, not "
                f"{', '.join(beyond)}: drop them from --skills, or issue credentials with "
                "`claw creds create --role worker --skills ...` naming them"
            )
        await self.sync(None)
        missing = sorted(self._restrict - set(self._active.names()))
        if missing:
            available = sorted(set(self._base.names()) | set(self._active.names()))
            raise ConfigError(
                f"this worker cannot run skill(s) {', '.join(missing)}; available: {', '.join(available)}"
            )
        if not self._active.names():
            allowed = "" if self._allowed is None else f" (its credentials allow {', '.join(sorted(self._allowed))})"
            raise ConfigError(f"this worker has no skills to run{allowed}")

    async def run(self, puller: TaskPuller, stopping: asyncio.Event) -> None:
        """Follow the registry until `stopping` is set."""
        interval_s = self._config.worker.heartbeat_interval_s
        while not await wait_any(stopping, timeout_s=interval_s):
            try:
                await self.sync(puller)
            except NATS_ERRORS as exc:
                log.warning("skills.sync_failed", error=str(exc) or type(exc).__name__)

    async def sync(self, puller: TaskPuller | None) -> None:
        """Read the snapshot and, if it changed (or a failed load is due again), apply it."""
        snapshot, revision = await self._read()
        if revision is not None and revision == self._revision and not self._retry_due():
            return
        loads: dict[str, SkillLoad] = {}
        desired = await self._desired(snapshot, loads)
        self.loads = loads
        # Forget failures of versions no longer wanted here (disabled, replaced, skipped).
        failed = {name for name, load in loads.items() if load.state == FAILED}
        self._failures = {name: f for name, f in self._failures.items() if name in failed}
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

    def _retry_due(self) -> bool:
        now = self._clock.monotonic()
        return any(failure.retry_at <= now for failure in self._failures.values())

    async def _desired(self, snapshot: RegistrySnapshot | None, loads: dict[str, SkillLoad]) -> dict[str, Skill]:
        enabled = snapshot.enabled() if snapshot else {}
        disabled = snapshot.disabled_names() if snapshot else set()
        desired: dict[str, Skill] = {}
        for skill in self._base.all():
            installed = enabled.get(skill.name)
            if skill.name in disabled or (installed is not None and installed.source == "installed"):
                continue
            if self._wanted(skill.name):
                desired[skill.name] = skill
        for name, entry in enabled.items():
            if entry.source != "installed":
                continue
            if self._restrict and name not in self._restrict:
                loads[name] = SkillLoad(version=entry.version, state=SKIPPED, error="not among this worker's --skills")
                continue
            if self._allowed is not None and name not in self._allowed:
                loads[name] = SkillLoad(version=entry.version, state=SKIPPED, error="not among its credentials' skills")
                continue
            if not labels_allow(entry.manifest, self._config.worker.labels):
                needs = ", ".join(f"{k}={v}" for k, v in sorted(entry.manifest.requires_labels.items()))
                loads[name] = SkillLoad(version=entry.version, state=SKIPPED, error=f"needs the label(s) {needs}")
                continue
            loaded = await self._installed(entry)
            failure = self._failures.get(name)
            if loaded is not None:
                desired[name] = loaded
                loads[name] = SkillLoad(version=entry.version, state=LOADED)
            elif failure is not None:
                loads[name] = SkillLoad(
                    version=entry.version, state=FAILED, error=failure.error, attempts=failure.attempts
                )
        return desired

    def _wanted(self, name: str) -> bool:
        """Whether `--skills` and the credentials' skill set both let this worker run `name`."""
        return (not self._restrict or name in self._restrict) and (self._allowed is None or name in self._allowed)

    async def _installed(self, entry: RegistryEntry) -> Skill | None:
        """The loaded skill for an installed entry (loading it on first sight, and again once a
        failed load's backoff has passed); None if it cannot load (yet)."""
        current = self._active.get(entry.name)
        if current is not None and current.manifest is not None and current.version == entry.version:
            return current
        failure = self._failures.get(entry.name)
        if failure is not None and failure.version != entry.version:
            failure = None  # another version: a fresh start
        if failure is not None and self._clock.monotonic() < failure.retry_at:
            return None
        try:
            skill = await self._load(entry)
        except (ClawError, OSError) as exc:
            attempts = 1 if failure is None else failure.attempts + 1
            delay_s = LOAD_RETRY.delay_s(attempts, random.random())
            self._failures[entry.name] = _LoadFailure(
                entry.version, str(exc), attempts, self._clock.monotonic() + delay_s
            )
            log.error(
                "skills.load_failed",
                skill=entry.name,
                version=entry.version,
                error=str(exc),
                attempt=attempts,
                retry_in_s=round(delay_s, 1),
            )
            return None
        self._failures.pop(entry.name, None)
        return skill

    async def _load(self, entry: RegistryEntry) -> Skill:
        if entry.archive is None:
            raise ConfigError(f"skill {entry.name}@{entry.version} has no files to load")
        folder = self._cache / entry.name / f"{entry.version}-{entry.checksum[:16]}"
        if folder.exists() and await asyncio.to_thread(folder_checksum, folder) != entry.checksum:
            log.warning("skills.cache_mismatch", skill=entry.name, version=entry.version, folder=str(folder))
            await asyncio.to_thread(discard_folder, folder)
        if not folder.exists():
            await self._unpack(entry, entry.archive, folder)
            if await asyncio.to_thread(folder_checksum, folder) != entry.checksum:
                raise ConfigError(
                    f"the files of {entry.name}@{entry.version} do not match their registered checksum; "
                    "not loading them"
                )
        return skill_from_manifest(entry.manifest, self._config, folder=folder)

    async def _unpack(self, entry: RegistryEntry, archive: str, folder: Path) -> None:
        """Fetch the skill's archive from the skill-code store and unpack it into the cache."""
        store = await self._topology.skill_code()
        try:
            result = await store.get(archive)
        except NATS_ERRORS as exc:
            raise ConfigError(f"cannot fetch the files of {entry.name}@{entry.version}: {exc}") from None
        data = bytes(result.data or b"")
        await self._check_archive(entry, data)
        try:
            await asyncio.to_thread(unpack_archive, data, folder)
        except (tarfile.TarError, zlib.error, EOFError) as exc:
            raise ConfigError(f"the archive of {entry.name}@{entry.version} cannot be unpacked: {exc}") from None

    async def _check_archive(self, entry: RegistryEntry, data: bytes) -> None:
        """Refuse an archive whose sha256 is not the one the coordinator registered, before a byte of
        it is unpacked: someone who can write the skill-code store (and not the registry, which only
        the coordinator writes) must not get code onto the workers."""
        if entry.archive_sha256 is None:
            return  # installed before archives were hashed: the unpacked files' checksum still holds
        digest = await asyncio.to_thread(archive_sha256, data)
        if digest == entry.archive_sha256:
            return
        log.error(
            "skills.archive_tampered",
            skill=entry.name,
            version=entry.version,
            expected_sha256=entry.archive_sha256,
            actual_sha256=digest,
            security=True,
        )
        raise SkillArchiveTamperedError(
            f"the archive of {entry.name}@{entry.version} in the skill store has sha256 {digest[:16]}, not the "
            f"{entry.archive_sha256[:16]} registered at install: it was changed after install; not loading it "
            "(an admin reinstalls the skill from its source under a new version)"
        )


def credential_skills(config: ClawConfig) -> set[str] | None:
    """The skill set the worker's credentials file names (None: every skill, or no OpenClaw credentials)."""
    creds = credentials_of(config.nats)
    return None if creds is None or creds.skills is None else set(creds.skills)
