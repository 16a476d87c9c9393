"""The skill `python.exec`: runs Python code in a separate, confined, resource-limited interpreter.

The code runs in the launcher's forked child (launcher.py): `<python> -I` (isolated mode: no PYTHON*
variables, no user site, the sandbox not on sys.path), started in the sandbox with a scrubbed
environment, as the sandbox user and inside bwrap where it works (isolation.py). Before the code runs
the process limits itself - address space (tools.python_memory_mb), CPU time (tools.python_cpu_s),
file size (tools.write_max_bytes), no core files; the code is read from stdin behind a length line,
so whatever follows is the code's own stdin. Output capture, the tree's limits, the timeout and the
killing are those of shell.exec (processes.py).

A run that hit a limit is recognisable: `limit_exceeded` is "memory" (the code raised MemoryError,
with the exit code MEMORY_EXIT_CODE and a last stderr line saying so; or the whole tree went over
tools.task_memory_mb), "cpu" (killed by SIGXCPU, exit code -24) or "processes".
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from common.config import ToolSettings
from common.errors import InvalidInputError
from worker.context import TaskContext
from worker.skills import Skill
from worker.skills.tools import inputs
from worker.skills.tools.isolation import Isolation
from worker.skills.tools.processes import ProcessRun, PythonCode, child_env, run_process
from worker.skills.tools.sandbox import Workspace

SKILL = "python.exec"
FIELDS = ("code", "stdin", "timeout_s", "env", "workspace")
MEMORY_EXIT_CODE = 86
CODE_NAME = "<python.exec>"
MIB = 1024 * 1024


class PythonTool:
    """The python.exec handler; it closes over the tool settings."""

    def __init__(self, settings: ToolSettings, isolation: Isolation | None = None) -> None:
        self._settings = settings
        self._isolation = isolation or Isolation(settings)
        self._interpreter = settings.python_executable or sys.executable

    def skills(self) -> list[Skill]:
        """The one Python skill."""
        return [Skill(SKILL, self.exec, "runs Python code in a limited interpreter: {'code': ...}")]

    async def exec(self, ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        """{code, stdin?, timeout_s?, env?, workspace?} -> the result of shell.exec plus
        `limit_exceeded`: "memory", "cpu" or null."""
        inputs.check_fields(SKILL, input, FIELDS)
        code = inputs.string(SKILL, input, "code")
        stdin = inputs.optional_string(SKILL, input, "stdin") or ""
        timeout_s = inputs.timeout_s(SKILL, input)
        extra_env = inputs.string_map(SKILL, input, "env")
        workspace = Workspace.of(SKILL, self._settings.sandbox_root, ctx, input, self._isolation.user)
        sandbox = await asyncio.to_thread(workspace.open)
        env, dropped = child_env(SKILL, sandbox.root, extra_env)
        if dropped:
            ctx.log(f"{SKILL}: left out environment variable(s) that look secret: {', '.join(dropped)}", "warning")
        try:
            source = code.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(f"{SKILL}: 'code' holds characters UTF-8 cannot encode") from None
        settings = self._settings
        run = ProcessRun(
            skill=SKILL,
            what="the code",
            argv=[],
            executable=self._interpreter,
            cwd=sandbox.root,
            env=env,
            stdin=b"%d\n" % len(source) + source + stdin.encode("utf-8", errors="replace"),
            timeout_s=timeout_s,
            max_output_bytes=settings.output_max_bytes,
            workspace=sandbox.root,
            python=PythonCode(
                memory_bytes=settings.python_memory_mb * MIB,
                cpu_s=settings.python_cpu_s,
                code_name=CODE_NAME,
                memory_exit_code=MEMORY_EXIT_CODE,
            ),
        )
        result = await run_process(run, self._isolation)
        result["limit_exceeded"] = _limit_exceeded(result["exit_code"]) or result["limit_exceeded"]
        return result


def _limit_exceeded(exit_code: int) -> str | None:
    """The limit of the interpreter itself that ended it, if one did."""
    if exit_code == MEMORY_EXIT_CODE:
        return "memory"
    if exit_code == -signal.SIGXCPU:
        return "cpu"
    return None
