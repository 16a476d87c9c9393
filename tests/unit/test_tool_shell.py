"""The shell.exec skill: allowed programs only, argv never through a shell, a scrubbed environment,
capped output, and no process left behind on a timeout or a cancellation."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from common.config import ToolSettings
from common.errors import InvalidInputError, PermanentError, RetryableError, ToolTimeoutError
from common.events import TaskEvent, TaskLog
from tests.helpers import BOTH_LOOPS, eventually, task_context
from tests.tool_processes import marked, new_marker, zombie_children
from worker.context import TaskContext
from worker.skills.tools.shell import ShellTool

ALLOWED = ["echo", "sh", "cat", "env", "pwd"]

# The child processes' transports differ between uvloop and asyncio: each test runs on both.
pytestmark = BOTH_LOOPS


@pytest.fixture
def settings(tmp_path: Path) -> ToolSettings:
    return ToolSettings(sandbox_root=str(tmp_path / "sandboxes"), shell_allow=ALLOWED, output_max_bytes=1000)


@pytest.fixture
def shell(settings: ToolSettings) -> ShellTool:
    return ShellTool(settings)


@pytest.fixture
def events() -> list[TaskEvent]:
    return []


@pytest.fixture
def ctx(events: list[TaskEvent]) -> TaskContext:
    return task_context("shell.exec", events=events)


def sandbox_of(settings: ToolSettings, ctx: TaskContext) -> Path:
    return Path(settings.sandbox_root).resolve() / ctx.task_id


def real_program(name: str) -> str:
    return os.path.realpath(shutil.which(name) or name)


async def test_runs_an_allowed_program_in_the_sandbox(
    shell: ShellTool, ctx: TaskContext, settings: ToolSettings
) -> None:
    result = await shell.exec(ctx, {"argv": ["pwd"]})
    assert result["stdout"] == f"{sandbox_of(settings, ctx)}\n"
    assert (result["exit_code"], result["stderr"], result["stdout_truncated"]) == (0, "", False)
    assert result["duration_s"] >= 0


async def test_argv_is_passed_literally_never_through_a_shell(
    shell: ShellTool, ctx: TaskContext, settings: ToolSettings
) -> None:
    result = await shell.exec(ctx, {"argv": ["echo", "$HOME; rm -rf x", "`id`", "*"]})
    assert result["stdout"] == "$HOME; rm -rf x `id` *\n"


async def test_a_program_outside_the_allow_list_is_refused_saying_how_to_allow_it(
    shell: ShellTool, ctx: TaskContext
) -> None:
    with pytest.raises(PermanentError, match=r"program 'ls' \(.*\) is not allowed.*tools\.shell_allow"):
        await shell.exec(ctx, {"argv": ["ls", "/"]})


async def test_sh_c_is_refused_unless_sh_is_allowed(tmp_path: Path, ctx: TaskContext) -> None:
    without_sh = ShellTool(ToolSettings(sandbox_root=str(tmp_path / "s"), shell_allow=["echo"]))
    with pytest.raises(PermanentError, match="program 'sh'.*not allowed.*tools.shell_allow"):
        await without_sh.exec(ctx, {"argv": ["sh", "-c", "echo hi"]})
    with_sh = ShellTool(ToolSettings(sandbox_root=str(tmp_path / "s"), shell_allow=["echo", "sh"]))
    assert (await with_sh.exec(ctx, {"argv": ["sh", "-c", "echo hi"]}))["stdout"] == "hi\n"


async def test_an_empty_allow_list_allows_nothing(tmp_path: Path, ctx: TaskContext) -> None:
    shell = ShellTool(ToolSettings(sandbox_root=str(tmp_path / "s")))
    with pytest.raises(PermanentError, match="'echo' is not allowed: this worker allows none.*tools.shell_allow"):
        await shell.exec(ctx, {"argv": ["echo", "hi"]})


async def test_the_allow_list_compares_resolved_real_paths(
    tmp_path: Path, ctx: TaskContext, settings: ToolSettings
) -> None:
    echo = real_program("echo")
    shell = ShellTool(ToolSettings(sandbox_root=settings.sandbox_root, shell_allow=[echo]))
    assert (await shell.exec(ctx, {"argv": ["echo", "by name"]}))["stdout"] == "by name\n"
    # A symlink named like an allowed program but leading to another one is refused.
    sandbox = sandbox_of(settings, ctx)
    (sandbox / "echo").symlink_to(shutil.which("cat") or "")
    with pytest.raises(PermanentError, match="'./echo'.*is not allowed"):
        await shell.exec(ctx, {"argv": ["./echo", "disguised"]})


async def test_an_unknown_program_is_refused(shell: ShellTool, ctx: TaskContext) -> None:
    with pytest.raises(PermanentError, match="'no-such-program-xyz' is not an executable on the worker's PATH"):
        await shell.exec(ctx, {"argv": ["no-such-program-xyz"]})


async def test_secret_looking_variables_of_the_worker_never_reach_the_child(
    shell: ShellTool, ctx: TaskContext, settings: ToolSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAW_TEST_API_TOKEN", "tok-123")
    monkeypatch.setenv("CLAW_TEST_PLAIN", "plain-456")
    result = await shell.exec(ctx, {"argv": ["env"]})
    assert "tok-123" not in result["stdout"] and "CLAW_TEST_API_TOKEN" not in result["stdout"]
    # The child starts from a minimal environment, not the worker's.
    assert "plain-456" not in result["stdout"]
    variables = dict(line.split("=", 1) for line in result["stdout"].splitlines())
    assert set(variables) == {"PATH", "LANG", "HOME", "TMPDIR"}
    assert variables["HOME"] == str(sandbox_of(settings, ctx))


async def test_input_env_is_passed_but_secret_looking_names_are_dropped_and_logged(
    shell: ShellTool, ctx: TaskContext, events: list[TaskEvent]
) -> None:
    env = {"GREETING": "hello", "GITHUB_TOKEN": "ghp-x", "db_password": "pw-y", "AWS_SECRET_ACCESS_KEY": "k"}
    result = await shell.exec(ctx, {"argv": ["env"], "env": env})
    assert "GREETING=hello\n" in result["stdout"]
    for hidden in ("ghp-x", "pw-y", "GITHUB_TOKEN", "db_password", "AWS_SECRET"):
        assert hidden not in result["stdout"]
    logs = [e.message for e in events if isinstance(e, TaskLog)]
    dropped = "AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN, db_password"
    assert logs == [f"shell.exec: left out environment variable(s) that look secret: {dropped}"]


@pytest.mark.parametrize("name", ["PATH", "HOME", "LD_PRELOAD", "DYLD_INSERT_LIBRARIES", "1BAD", "A-B"])
async def test_env_may_not_set_path_home_loader_or_invalid_names(shell: ShellTool, ctx: TaskContext, name: str) -> None:
    with pytest.raises(InvalidInputError, match="shell.exec: 'env'"):
        await shell.exec(ctx, {"argv": ["env"], "env": {name: "x"}})


async def test_a_non_zero_exit_is_a_result_not_an_error(shell: ShellTool, ctx: TaskContext) -> None:
    result = await shell.exec(ctx, {"argv": ["sh", "-c", "echo oops >&2; exit 3"]})
    assert (result["exit_code"], result["stderr"]) == (3, "oops\n")


async def test_stdin_is_fed_to_the_program(shell: ShellTool, ctx: TaskContext) -> None:
    assert (await shell.exec(ctx, {"argv": ["cat"], "stdin": "line one\nline two\n"}))[
        "stdout"
    ] == "line one\nline two\n"


async def test_output_beyond_the_cap_is_cut_and_flagged_on_each_stream(shell: ShellTool, ctx: TaskContext) -> None:
    script = "i=0; while [ $i -lt 300 ]; do echo 0123456789; echo abcdefghij >&2; i=$((i+1)); done; echo end"
    result = await shell.exec(ctx, {"argv": ["sh", "-c", script]})
    assert result["exit_code"] == 0
    assert len(result["stdout"]) == 1000 and result["stdout"].startswith("0123456789\n")
    assert len(result["stderr"]) == 1000 and result["stderr"].startswith("abcdefghij\n")
    assert result["stdout_truncated"] and result["stderr_truncated"]


async def test_cwd_is_a_directory_inside_the_sandbox(
    shell: ShellTool, ctx: TaskContext, settings: ToolSettings
) -> None:
    sandbox_of(settings, ctx).mkdir(parents=True)
    (sandbox_of(settings, ctx) / "sub").mkdir()
    assert (await shell.exec(ctx, {"argv": ["pwd"], "cwd": "sub"}))["stdout"] == f"{sandbox_of(settings, ctx)}/sub\n"
    with pytest.raises(InvalidInputError, match="'cwd' '..' leaves the sandbox"):
        await shell.exec(ctx, {"argv": ["pwd"], "cwd": ".."})
    with pytest.raises(InvalidInputError, match="'cwd' must be relative"):
        await shell.exec(ctx, {"argv": ["pwd"], "cwd": "/"})


async def test_timeout_kills_the_whole_process_group_and_is_retryable(
    shell: ShellTool, ctx: TaskContext, settings: ToolSettings
) -> None:
    marker = new_marker()
    script = f"sleep {marker} & touch started; wait"
    with pytest.raises(ToolTimeoutError, match="'sh' ran past its timeout of 2 s and was killed") as caught:
        await shell.exec(ctx, {"argv": ["sh", "-c", script], "timeout_s": 2})
    assert isinstance(caught.value, RetryableError)
    assert (sandbox_of(settings, ctx) / "started").exists()
    await eventually(lambda: not marked(marker), timeout_s=10, what="sh and its background sleep gone")
    assert not zombie_children()


async def test_background_processes_do_not_outlive_a_normal_exit(shell: ShellTool, ctx: TaskContext) -> None:
    """The background sleep holds stdout open: without the group kill the result would wait for it."""
    marker = new_marker()
    result = await shell.exec(ctx, {"argv": ["sh", "-c", f"sleep {marker} & echo started"], "timeout_s": 30})
    assert (result["exit_code"], result["stdout"]) == (0, "started\n")
    await eventually(lambda: not marked(marker), timeout_s=10, what="background sleep gone")


async def test_a_program_that_cannot_start_is_a_permanent_error(
    tmp_path: Path, ctx: TaskContext, settings: ToolSettings
) -> None:
    """Its interpreter is missing. (A file of no executable format is no such case on every loop:
    uvloop, like execvp, hands it to /bin/sh, while asyncio's loop refuses it.)"""
    broken = tmp_path / "broken"
    broken.write_text("#!/nonexistent/interpreter\necho never\n")
    broken.chmod(0o755)
    shell = ShellTool(ToolSettings(sandbox_root=settings.sandbox_root, shell_allow=[str(broken)]))
    with pytest.raises(PermanentError, match="shell.exec: cannot start '.*broken'"):
        await shell.exec(ctx, {"argv": [str(broken)]})


async def test_cancelling_the_handler_kills_and_reaps_the_process_group(
    shell: ShellTool, ctx: TaskContext, settings: ToolSettings
) -> None:
    """What happens when the worker's task timeout (or a shutdown) cancels the handler."""
    marker = new_marker()
    script = f"sleep {marker} & touch started; wait"
    running = asyncio.create_task(shell.exec(ctx, {"argv": ["sh", "-c", script]}))
    started = (sandbox_of(settings, ctx) / "started").exists
    await eventually(started, timeout_s=20, what="sh and its background sleep started")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await eventually(lambda: not marked(marker), timeout_s=10, what="sh and its background sleep gone")
    # The launcher was our child: it is reaped, not left a zombie.
    assert not zombie_children()


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({}, "shell.exec: 'argv' must be a non-empty list of strings"),
        ({"argv": []}, "shell.exec: 'argv' must be a non-empty list of strings"),
        ({"argv": "echo hi"}, "shell.exec: 'argv' must be a non-empty list of strings"),
        ({"argv": ["echo"], "timeout_s": 0}, "shell.exec: 'timeout_s' must be a number"),
        ({"argv": ["echo"], "env": {"A": 1}}, "shell.exec: 'env' must be an object of string values"),
        ({"argv": ["echo"], "shell": True}, "shell.exec: unknown field\\(s\\) 'shell'"),
        ({"argv": ["echo", "a\x00b"]}, "shell.exec: 'argv' items may not hold NUL characters"),
        ({"argv": ["echo"], "env": {"A": "a\x00b"}}, "shell.exec: 'env': the value of A holds a NUL"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(
    shell: ShellTool, ctx: TaskContext, input: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await shell.exec(ctx, input)
