"""The skill `shell.exec`: runs one allowed program with an argv list - never a shell string.

The program (argv[0]) must be on the worker's allow-list, `tools.shell_allow`: names looked up on the
worker's PATH or absolute paths, compared by their resolved real paths; an empty list allows nothing.
The allowed file itself is executed (by its real path), so changing PATH or a symlink after the
check cannot swap the program. The child runs in the sandbox - as the sandbox user, inside bwrap
where it works (isolation.py) - with a scrubbed environment, capped output, and a process tree that
is limited and killed when it ends (processes.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

from common.config import ToolSettings
from common.errors import ConfigError, InvalidInputError, PermanentError
from worker.context import TaskContext
from worker.skills import Skill
from worker.skills.tools import inputs
from worker.skills.tools.isolation import Isolation
from worker.skills.tools.processes import DEFAULT_PATH, ProcessRun, child_env, run_process
from worker.skills.tools.sandbox import Sandbox, Workspace

SKILL = "shell.exec"
FIELDS = ("argv", "stdin", "timeout_s", "cwd", "env", "workspace")


class ShellTool:
    """The shell.exec handler; it closes over the tool settings."""

    def __init__(self, settings: ToolSettings, isolation: Isolation | None = None) -> None:
        for entry in settings.shell_allow:
            if not entry or (os.sep in entry and not os.path.isabs(entry)):
                raise ConfigError(
                    f"tools.shell_allow: {entry!r} must be a program name or an absolute path, not a relative path"
                )
        self._settings = settings
        self._isolation = isolation or Isolation(settings)

    def skills(self) -> list[Skill]:
        """The one shell skill."""
        return [Skill(SKILL, self.exec, "runs an allowed program: {'argv': [...]}")]

    async def exec(self, ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        """{argv, stdin?, timeout_s?, cwd?, env?, workspace?} -> {exit_code, stdout, stderr,
        stdout_truncated, stderr_truncated, duration_s, limit_exceeded}; a non-zero exit is a result,
        not an error."""
        inputs.check_fields(SKILL, input, FIELDS)
        argv = inputs.string_list(SKILL, input, "argv")
        if any("\x00" in arg for arg in argv):
            raise InvalidInputError(f"{SKILL}: 'argv' items may not hold NUL characters")
        stdin = inputs.optional_string(SKILL, input, "stdin")
        timeout_s = inputs.timeout_s(SKILL, input)
        cwd = inputs.optional_string(SKILL, input, "cwd") or "."
        extra_env = inputs.string_map(SKILL, input, "env")
        workspace = Workspace.of(SKILL, self._settings.sandbox_root, ctx, input, self._isolation.user)
        sandbox, cwd_path, executable = await asyncio.to_thread(self._prepare, workspace, argv[0], cwd)
        env, dropped = child_env(SKILL, sandbox.root, extra_env)
        if dropped:
            ctx.log(f"{SKILL}: left out environment variable(s) that look secret: {', '.join(dropped)}", "warning")
        run = ProcessRun(
            skill=SKILL,
            what=repr(argv[0]),
            argv=argv,
            executable=executable,
            cwd=cwd_path,
            env=env,
            stdin=stdin.encode("utf-8", errors="replace") if stdin is not None else None,
            timeout_s=timeout_s,
            max_output_bytes=self._settings.output_max_bytes,
            workspace=sandbox.root,
        )
        return await run_process(run, self._isolation)

    def _prepare(self, workspace: Workspace, program: str, cwd: str) -> tuple[Sandbox, str, str]:
        """Open the sandbox, check the working directory and the program (blocking: in a thread)."""
        sandbox = workspace.open()
        cwd_path = sandbox.resolve("cwd", cwd)
        if not os.path.isdir(cwd_path):
            raise PermanentError(f"{SKILL}: 'cwd' {cwd!r} is not a directory of the sandbox")
        return sandbox, cwd_path, self._allowed_program(program, cwd_path)

    def _allowed_program(self, program: str, cwd: str) -> str:
        """The real path of `program` if the allow-list has it; else a refusal saying how to allow it."""
        how = "to allow it, add it to tools.shell_allow in the worker's config"
        if not self._settings.shell_allow:
            raise PermanentError(f"{SKILL}: program {program!r} is not allowed: this worker allows none; {how}")
        search_path = worker_path()
        real = resolve_program(program, cwd, search_path)
        if real is None:
            raise PermanentError(f"{SKILL}: program {program!r} is not an executable on the worker's PATH")
        allowed = {resolve_program(entry, cwd, search_path) for entry in self._settings.shell_allow}
        if real not in allowed:
            raise PermanentError(f"{SKILL}: program {program!r} ({real}) is not allowed on this worker; {how}")
        return real


def worker_path() -> str:
    """The PATH programs are looked up on (the worker's own; children get the same)."""
    return os.environ.get("PATH") or DEFAULT_PATH


def resolve_program(program: str, cwd: str, search_path: str) -> str | None:
    """The real path of the executable file `program` names (a name looked up on `search_path`, or
    a path, relative ones from `cwd`), or None."""
    if os.sep in program:
        candidate: str | None = os.path.join(cwd, program)
    else:
        candidate = shutil.which(program, path=search_path)
    if candidate is None:
        return None
    real = os.path.realpath(os.path.abspath(candidate))
    return real if os.path.isfile(real) and os.access(real, os.X_OK) else None
