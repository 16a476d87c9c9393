"""The skill `python.exec`: runs Python code in a separate, resource-limited interpreter.

The child is `sys.executable -I -c LAUNCHER` (isolated mode: no PYTHON* variables, no user site, the
sandbox not on sys.path) started in the sandbox with a scrubbed environment. The launcher limits
itself with `resource.setrlimit` - address space (tools.python_memory_mb), CPU time
(tools.python_cpu_s), no core files - and then runs the code, which it reads from stdin behind a
length line, so whatever follows is the code's own stdin. (A preexec_fn would do the same in the
worker, but it is not safe with threads.) Output capture, timeout and killing are those of
shell.exec (processes.py).

A run that hit a limit is recognisable: `limit_exceeded` is "memory" (the code raised MemoryError;
the exit code is MEMORY_EXIT_CODE and stderr ends with a line saying so) or "cpu" (killed by
SIGXCPU, exit code -24).
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
from worker.skills.tools.processes import ProcessRun, child_env, run_process
from worker.skills.tools.sandbox import Workspace

SKILL = "python.exec"
FIELDS = ("code", "stdin", "timeout_s", "env", "workspace")
MEMORY_EXIT_CODE = 86
CODE_NAME = "<python.exec>"
MIB = 1024 * 1024

# Runs in the child. Everything is inside a function so that the code's __main__ starts empty.
LAUNCHER = f"""
def _claw_launch():
    import linecache, resource, sys, traceback

    def limit(which, soft, hard):
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(which, (soft, hard))

    memory_bytes, cpu_s = int(sys.argv[1]), int(sys.argv[2])
    size = int(sys.stdin.buffer.readline())
    source = sys.stdin.buffer.read(size).decode("utf-8")
    linecache.cache[{CODE_NAME!r}] = (len(source), None, source.splitlines(True), {CODE_NAME!r})
    sys.argv = [{CODE_NAME!r}]
    main = sys.modules["__main__"].__dict__
    del main["_claw_launch"]
    limit(resource.RLIMIT_CORE, 0, 0)
    limit(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)
    limit(resource.RLIMIT_AS, memory_bytes, memory_bytes)
    try:
        exec(compile(source, {CODE_NAME!r}, "exec"), main)
    except MemoryError:
        sys.stderr.write("\\nMemoryError: python.exec stopped at its memory limit (tools.python_memory_mb)\\n")
        sys.exit({MEMORY_EXIT_CODE})
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        sys.exit(1)

_claw_launch()
"""


class PythonTool:
    """The python.exec handler; it closes over the tool settings."""

    def __init__(self, settings: ToolSettings) -> None:
        self._settings = settings

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
        workspace = Workspace.of(SKILL, self._settings.sandbox_root, ctx, input)
        sandbox = await asyncio.to_thread(workspace.open)
        env, dropped = child_env(SKILL, sandbox.root, extra_env)
        if dropped:
            ctx.log(f"{SKILL}: left out environment variable(s) that look secret: {', '.join(dropped)}", "warning")
        try:
            source = code.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(f"{SKILL}: 'code' holds characters UTF-8 cannot encode") from None
        settings = self._settings
        limits = [str(settings.python_memory_mb * MIB), str(settings.python_cpu_s)]
        run = ProcessRun(
            skill=SKILL,
            what="the code",
            argv=[sys.executable, "-I", "-c", LAUNCHER, *limits],
            executable=sys.executable,
            cwd=sandbox.root,
            env=env,
            stdin=b"%d\n" % len(source) + source + stdin.encode("utf-8", errors="replace"),
            timeout_s=timeout_s,
            max_output_bytes=settings.output_max_bytes,
        )
        result = await run_process(run)
        result["limit_exceeded"] = _limit_exceeded(result["exit_code"])
        return result


def _limit_exceeded(exit_code: int) -> str | None:
    if exit_code == MEMORY_EXIT_CODE:
        return "memory"
    if exit_code == -signal.SIGXCPU:
        return "cpu"
    return None
