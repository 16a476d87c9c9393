"""The python.exec skill: code in a separate, isolated, resource-limited interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.config import ToolSettings
from common.errors import InvalidInputError, RetryableError, ToolTimeoutError
from tests.helpers import BOTH_LOOPS, eventually, task_context
from tests.tool_processes import marked, new_marker, working_in, zombie_children
from worker.context import TaskContext
from worker.skills.tools.python_exec import MEMORY_EXIT_CODE, PythonTool

# The child processes' transports differ between uvloop and asyncio: each test runs on both.
pytestmark = BOTH_LOOPS


@pytest.fixture
def settings(tmp_path: Path) -> ToolSettings:
    return ToolSettings(sandbox_root=str(tmp_path / "sandboxes"), output_max_bytes=1000, python_memory_mb=256)


@pytest.fixture
def python(settings: ToolSettings) -> PythonTool:
    return PythonTool(settings)


@pytest.fixture
def ctx() -> TaskContext:
    return task_context("python.exec")


def sandbox_of(settings: ToolSettings, ctx: TaskContext) -> str:
    return str(Path(settings.sandbox_root).resolve() / ctx.task_id)


async def test_runs_code_and_returns_its_output_and_exit_code(python: PythonTool, ctx: TaskContext) -> None:
    result = await python.exec(ctx, {"code": "import sys\nprint(6 * 7)\nprint('warn', file=sys.stderr)\nsys.exit(3)"})
    assert (result["exit_code"], result["stdout"], result["stderr"]) == (3, "42\n", "warn\n")
    assert result["limit_exceeded"] is None


async def test_stdin_follows_the_code(python: PythonTool, ctx: TaskContext) -> None:
    result = await python.exec(ctx, {"code": "import sys; print(sys.stdin.read().upper())", "stdin": "abc\ndef"})
    assert result["stdout"] == "ABC\nDEF\n"


async def test_runs_isolated_in_the_sandbox_with_a_scrubbed_environment(
    python: PythonTool, ctx: TaskContext, settings: ToolSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAW_TEST_SECRET_KEY", "s3cr3t")
    code = (
        "import os, sys\n"
        "print(os.getcwd())\n"
        "print(sys.flags.isolated, __name__, sorted(os.environ))\n"
        "print('s3cr3t' in str(os.environ))"
    )
    result = await python.exec(ctx, {"code": code})
    assert result["stdout"].splitlines() == [
        sandbox_of(settings, ctx),
        "1 __main__ ['HOME', 'LANG', 'PATH', 'TMPDIR']",
        "False",
    ]


async def test_an_exception_exits_1_with_a_traceback_of_the_code_only(python: PythonTool, ctx: TaskContext) -> None:
    result = await python.exec(ctx, {"code": "x = 1\ny = x / 0\n"})
    assert result["exit_code"] == 1
    assert 'File "<python.exec>", line 2, in <module>' in result["stderr"]
    assert "y = x / 0" in result["stderr"] and result["stderr"].endswith("ZeroDivisionError: division by zero\n")
    assert "_claw_launch" not in result["stderr"]


async def test_memory_limit_stops_the_code_recognisably(tmp_path: Path, ctx: TaskContext) -> None:
    python = PythonTool(ToolSettings(sandbox_root=str(tmp_path / "s"), python_memory_mb=128))
    result = await python.exec(ctx, {"code": "print('before', flush=True)\nblock = bytearray(1024 ** 3)\n"})
    assert (result["exit_code"], result["limit_exceeded"]) == (MEMORY_EXIT_CODE, "memory")
    assert result["stdout"] == "before\n"
    assert result["stderr"].endswith("MemoryError: python.exec stopped at its memory limit (tools.python_memory_mb)\n")


async def test_cpu_limit_kills_a_busy_loop_recognisably(tmp_path: Path, ctx: TaskContext) -> None:
    python = PythonTool(ToolSettings(sandbox_root=str(tmp_path / "s"), python_cpu_s=1))
    result = await python.exec(ctx, {"code": "while True:\n    pass\n", "timeout_s": 60})
    assert (result["exit_code"], result["limit_exceeded"]) == (-24, "cpu")


async def test_timeout_kills_the_interpreter_and_its_children(
    python: PythonTool, ctx: TaskContext, settings: ToolSettings
) -> None:
    marker = new_marker()
    code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '{marker}'])\n"
        "open('started', 'w').close()\n"
        "time.sleep(60)\n"
    )
    with pytest.raises(ToolTimeoutError, match="python.exec: the code ran past its timeout of 3 s") as caught:
        await python.exec(ctx, {"code": code, "timeout_s": 3})
    assert isinstance(caught.value, RetryableError)
    sandbox = sandbox_of(settings, ctx)
    assert (Path(sandbox) / "started").exists()
    await eventually(lambda: not marked(marker) and not working_in(sandbox), timeout_s=10, what="all gone")
    assert not zombie_children()


async def test_output_beyond_the_cap_is_cut_and_flagged(python: PythonTool, ctx: TaskContext) -> None:
    result = await python.exec(ctx, {"code": "print('x' * 5000)"})
    assert (len(result["stdout"]), result["stdout_truncated"], result["exit_code"]) == (1000, True, 0)


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({}, "python.exec: 'code' must be a string"),
        ({"code": "pass", "stdin": 5}, "python.exec: 'stdin' must be a string"),
        ({"code": "pass", "timeout_s": -1}, "python.exec: 'timeout_s' must be a number"),
        ({"code": "pass", "memory_mb": 9000}, "python.exec: unknown field\\(s\\) 'memory_mb'"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(
    python: PythonTool, ctx: TaskContext, input: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await python.exec(ctx, input)
