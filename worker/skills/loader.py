"""Turning manifests into runnable skills.

- `python: module:function` - for a built-in skill an installed module (`worker.skills.builtin:echo`);
  for an installed skill a `.py` file in its folder (`handler:run` is `<folder>/handler.py`), loaded
  under a module name unique to the skill and version, so two skills may both have a `handler.py`.
- `python` with `factory: true` - a function `(config: ClawConfig) -> list[Skill]`; the skill named
  in the manifest is taken from its result (how the tool skills get their limits).
- `command: [...]` - a program started in the skill's folder for each task: the input JSON on stdin,
  the result JSON on stdout; exit code 75 (EX_TEMPFAIL) asks for a retry, any other non-zero code
  is a permanent failure with the tail of stderr. It runs confined like shell.exec (as the sandbox
  user, in bwrap where it works, under the tree limits: worker/skills/tools/processes.py) with its
  folder read-only and a scratch workspace of its own (HOME and TMPDIR) that is removed after the
  run; it is killed with its whole process tree at the task's timeout or cancel.

A skill whose `requires_labels` the worker lacks is not loaded there.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import importlib.util
import io
import json
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from common.config import ClawConfig
from common.errors import ConfigError, PermanentError, RetryableError
from common.skills import SkillManifest, builtin_manifests
from worker.context import TaskContext
from worker.skills import Skill
from worker.skills.tools.isolation import Isolation
from worker.skills.tools.processes import ProcessRun, child_env, run_process
from worker.skills.tools.sandbox import Workspace

EX_TEMPFAIL = 75
STDERR_TAIL = 2000


def labels_allow(manifest: SkillManifest, labels: dict[str, str]) -> bool:
    """Whether a worker with `labels` may load a skill (all its required labels match)."""
    return all(labels.get(key) == value for key, value in manifest.requires_labels.items())


def load_builtin_skills(config: ClawConfig) -> list[Skill]:
    """The built-in skills this worker's labels allow."""
    skills = []
    for manifest in builtin_manifests():
        if labels_allow(manifest, config.worker.labels):
            skills.append(skill_from_manifest(manifest, config, folder=None))
    return skills


def skill_from_manifest(manifest: SkillManifest, config: ClawConfig, *, folder: Path | None) -> Skill:
    """A Skill for `manifest`; `folder` is the installed skill's files (None for built-ins)."""
    runtime = manifest.runtime
    if runtime.command is not None:
        if folder is None:
            raise ConfigError(f"skill {manifest.key()}: a command runtime needs the skill's folder")
        handler = _command_handler(manifest, folder, config)
    else:
        assert runtime.python is not None
        target = _resolve(runtime.python, folder, manifest)
        if runtime.factory:
            made = [s for s in target(config) if s.name == manifest.name]
            if not made:
                raise ConfigError(f"skill {manifest.key()}: factory {runtime.python} made no skill of that name")
            handler = made[0].handler
        else:
            handler = target
    return Skill(
        name=manifest.name,
        handler=handler,
        description=manifest.description,
        version=manifest.version,
        risk=manifest.risk,
        manifest=manifest,
    )


def _resolve(target: str, folder: Path | None, manifest: SkillManifest) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    module = _import(module_name, folder, manifest)
    value = getattr(module, attr, None)
    if not callable(value):
        raise ConfigError(f"skill {manifest.key()}: {target} is not a function")
    return value  # type: ignore[no-any-return]


def _import(module_name: str, folder: Path | None, manifest: SkillManifest) -> ModuleType:
    if folder is None:
        try:
            return importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"skill {manifest.key()}: cannot import {module_name}: {exc}") from None
    path = folder / (module_name.replace(".", "/") + ".py")
    if not path.is_file():
        raise ConfigError(f"skill {manifest.key()}: runtime.python names {path.name}, not in the skill folder")
    unique = f"claw_skill_{manifest.name.replace('.', '_')}_{manifest.version.replace('.', '_').replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"skill {manifest.key()}: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any error in a skill module is reported as its load error
        sys.modules.pop(unique, None)
        raise ConfigError(f"skill {manifest.key()}: {path.name} failed to load: {type(exc).__name__}: {exc}") from None
    return module


def _command_handler(manifest: SkillManifest, folder: Path, config: ClawConfig) -> Callable[..., Any]:
    argv = list(manifest.runtime.command or [])
    executable = shutil.which(argv[0], path=f"{folder}:{_system_path()}") or argv[0]
    max_output = config.tools.output_max_bytes
    isolation = Isolation(config.tools)

    async def run_command(ctx: TaskContext, input: dict[str, Any]) -> Any:
        scratch = Workspace(
            manifest.name, config.tools.sandbox_root, f"cmd-{ctx.task_id}-{ctx.attempt}", isolation.user
        )
        home = await asyncio.to_thread(scratch.open)
        env, _ = child_env(manifest.name, home.root, {"CLAW_TASK_ID": ctx.task_id, "CLAW_ATTEMPT": str(ctx.attempt)})
        run = ProcessRun(
            skill=manifest.name,
            what=f"'{argv[0]}'",
            argv=argv,
            executable=executable,
            cwd=str(folder),
            env=env,
            stdin=json.dumps(input).encode(),
            timeout_s=None,  # the task's own timeout cancels the handler, which kills the tree
            max_output_bytes=max_output,
            workspace=home.root,
            read_only=(str(folder),),
        )
        try:
            result = await run_process(run, isolation)
        finally:
            await asyncio.to_thread(home.remove)
        code, stderr = result["exit_code"], result["stderr"][-STDERR_TAIL:]
        if result["limit_exceeded"]:
            stderr = f"{stderr.strip()} (stopped at its {result['limit_exceeded']} limit, tools.task_*)"

        if code == EX_TEMPFAIL:
            raise RetryableError(f"{manifest.name} exited with {code} (try again): {stderr.strip()}")
        if code != 0:
            raise PermanentError(f"{manifest.name} exited with {code}: {stderr.strip()}")
        if result["stdout_truncated"]:
            raise PermanentError(f"{manifest.name} printed more than {max_output} bytes of result")
        try:
            return json.loads(result["stdout"] or "null")
        except ValueError as exc:
            raise PermanentError(f"{manifest.name} printed something that is not JSON: {exc}") from None

    return run_command


def _system_path() -> str:
    import os

    return os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")


def unpack_archive(data: bytes, destination: Path) -> None:
    """Make `destination` hold the files of an installed skill's archive (tar.gz); safe when several
    worker processes share the cache and unpack the same skill at once.

    The archive is extracted into a staging folder of this call's own beside `destination`, then
    renamed into place in one step, so nobody ever sees a half-written folder. If another process
    renamed its copy first, that copy stays (the folder's name carries the checksum, so the files are
    the same) and ours is removed. An existing `destination` is never replaced: a worker may be
    running a task from it.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the cache folder is the workers' to share
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            # The "data" filter refuses absolute paths, "..", links out of the folder and device files.
            archive.extractall(staging, filter="data")
        try:
            staging.rename(destination)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def discard_folder(folder: Path) -> None:
    """Remove a cached skill folder whose files are not what they should be.

    It is renamed aside first (one atomic step), so a process unpacking a good copy meanwhile never
    has it deleted; another process discarding the same folder at the same time is fine.
    """
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".discarded", dir=folder.parent))
    try:
        folder.rename(trash / folder.name)
    except FileNotFoundError:
        pass  # another process moved it already
    finally:
        shutil.rmtree(trash, ignore_errors=True)
