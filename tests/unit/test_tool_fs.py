"""The fs.* skills: file operations confined to the task's sandbox, called as the worker calls them."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from common.config import ToolSettings
from common.errors import InvalidInputError, PermanentError
from tests.helpers import task_context
from worker.context import TaskContext
from worker.skills.tools.fs import FileTools
from worker.skills.tools.sandbox import Sandbox


@pytest.fixture
def settings(tmp_path: Path) -> ToolSettings:
    return ToolSettings(sandbox_root=str(tmp_path / "sandboxes"), output_max_bytes=1000)


@pytest.fixture
def fs(settings: ToolSettings) -> FileTools:
    return FileTools(settings)


@pytest.fixture
def ctx() -> TaskContext:
    return task_context("fs")


@pytest.fixture
def sandbox(settings: ToolSettings, ctx: TaskContext) -> Path:
    """The task's workspace directory, made as the first fs call would."""
    path = Path(settings.sandbox_root) / ctx.task_id
    path.mkdir(parents=True)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the sandbox root, with a file no task may touch."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("top secret")
    return path


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_write_then_read_round_trips_text_in_the_task_workspace(
    fs: FileTools, ctx: TaskContext, settings: ToolSettings
) -> None:
    assert await fs.write_file(ctx, {"path": "notes.md", "content": "héllo"}) == {"path": "notes.md", "size": 6}
    assert await fs.read_file(ctx, {"path": "notes.md"}) == {"path": "notes.md", "size": 6, "content": "héllo"}
    assert (Path(settings.sandbox_root) / ctx.task_id / "notes.md").read_text() == "héllo"


async def test_base64_round_trips_binary_content(fs: FileTools, ctx: TaskContext) -> None:
    blob = bytes(range(256))
    encoded = base64.b64encode(blob).decode()
    await fs.write_file(ctx, {"path": "blob.bin", "content": encoded, "encoding": "base64"})
    result = await fs.read_file(ctx, {"path": "blob.bin", "encoding": "base64"})
    assert (result["size"], result["content"]) == (256, encoded)


async def test_reading_binary_as_text_says_to_use_base64(fs: FileTools, ctx: TaskContext, sandbox: Path) -> None:
    (sandbox / "blob.bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PermanentError, match="not UTF-8 text; read it with encoding 'base64'"):
        await fs.read_file(ctx, {"path": "blob.bin"})


async def test_append_adds_to_the_file_and_returns_its_new_size(fs: FileTools, ctx: TaskContext) -> None:
    await fs.write_file(ctx, {"path": "log.txt", "content": "one\n"})
    assert (await fs.write_file(ctx, {"path": "log.txt", "content": "two\n", "append": True}))["size"] == 8
    assert (await fs.read_file(ctx, {"path": "log.txt"}))["content"] == "one\ntwo\n"


async def test_write_replaces_the_file_whole_and_leaves_no_temporary_file(
    fs: FileTools, ctx: TaskContext, sandbox: Path
) -> None:
    await fs.write_file(ctx, {"path": "state.json", "content": "a much longer first version"})
    await fs.write_file(ctx, {"path": "state.json", "content": "v2"})
    assert (sandbox / "state.json").read_text() == "v2"
    assert names(sandbox) == ["state.json"]


async def test_write_makes_parents_only_when_asked(fs: FileTools, ctx: TaskContext) -> None:
    with pytest.raises(PermanentError, match="'a/b/c.txt': does not exist"):
        await fs.write_file(ctx, {"path": "a/b/c.txt", "content": "x"})
    await fs.write_file(ctx, {"path": "a/b/c.txt", "content": "x", "make_parents": True})
    assert (await fs.read_file(ctx, {"path": "a/b/c.txt"}))["content"] == "x"


async def test_list_gives_names_types_and_sizes_sorted(fs: FileTools, ctx: TaskContext, sandbox: Path) -> None:
    (sandbox / "b.txt").write_text("12345")
    (sandbox / "a-dir").mkdir()
    (sandbox / "c-link").symlink_to("b.txt")
    result = await fs.list_dir(ctx, {})
    entries = [(e["name"], e["type"]) for e in result["entries"]]
    assert entries == [("a-dir", "dir"), ("b.txt", "file"), ("c-link", "symlink")]
    assert result["entries"][1]["size"] == 5 and result["truncated"] is False


async def test_mkdir_with_parents_is_like_mkdir_p(fs: FileTools, ctx: TaskContext, sandbox: Path) -> None:
    assert await fs.make_dir(ctx, {"path": "x/y/z", "parents": True}) == {"path": "x/y/z"}
    assert await fs.make_dir(ctx, {"path": "x/y/z", "parents": True}) == {"path": "x/y/z"}
    assert (sandbox / "x" / "y" / "z").is_dir()
    with pytest.raises(PermanentError, match="already exists"):
        await fs.make_dir(ctx, {"path": "x/y/z"})
    with pytest.raises(PermanentError, match="does not exist"):
        await fs.make_dir(ctx, {"path": "p/q"})


async def test_tasks_naming_the_same_workspace_share_its_files(fs: FileTools, settings: ToolSettings) -> None:
    first, second = task_context("fs.write"), task_context("fs.read")
    await fs.write_file(first, {"workspace": "session-1", "path": "plan.md", "content": "step 1"})
    assert (await fs.read_file(second, {"workspace": "session-1", "path": "plan.md"}))["content"] == "step 1"
    assert (Path(settings.sandbox_root) / "session-1" / "plan.md").is_file()
    with pytest.raises(PermanentError, match="does not exist"):
        await fs.read_file(second, {"path": "plan.md"})  # its own workspace is another one


@pytest.mark.parametrize("workspace", ["", "../up", ".hidden", "a/b", "x" * 65, "new\nline", 7])
async def test_invalid_workspace_names_are_refused(fs: FileTools, ctx: TaskContext, workspace: Any) -> None:
    with pytest.raises(InvalidInputError, match="'workspace'"):
        await fs.list_dir(ctx, {"workspace": workspace})


@pytest.mark.parametrize(
    ("operation", "input"),
    [
        ("read_file", {"path": "../outside/secret.txt"}),
        ("read_file", {"path": "sub/../../outside/secret.txt"}),
        ("write_file", {"path": "../../outside/new.txt", "content": "x"}),
        ("list_dir", {"path": ".."}),
        ("make_dir", {"path": "../escaped"}),
    ],
)
async def test_dot_dot_escapes_are_refused(
    fs: FileTools, ctx: TaskContext, outside: Path, operation: str, input: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError, match="leaves the sandbox"):
        await getattr(fs, operation)(ctx, input)
    assert names(outside) == ["secret.txt"]


@pytest.mark.parametrize("operation", ["read_file", "write_file", "list_dir", "make_dir"])
async def test_absolute_paths_are_refused(fs: FileTools, ctx: TaskContext, outside: Path, operation: str) -> None:
    input = {"path": str(outside / "secret.txt")} | ({"content": "x"} if operation == "write_file" else {})
    with pytest.raises(InvalidInputError, match="must be relative to the sandbox"):
        await getattr(fs, operation)(ctx, input)


async def test_symlink_to_outside_as_the_final_component_is_refused(
    fs: FileTools, ctx: TaskContext, sandbox: Path, outside: Path
) -> None:
    (sandbox / "link.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(PermanentError, match="resolves outside the sandbox"):
        await fs.read_file(ctx, {"path": "link.txt"})
    with pytest.raises(PermanentError, match="resolves outside the sandbox"):
        await fs.write_file(ctx, {"path": "link.txt", "content": "overwritten", "append": True})
    with pytest.raises(PermanentError, match="resolves outside the sandbox"):
        await fs.write_file(ctx, {"path": "link.txt", "content": "overwritten"})
    assert (outside / "secret.txt").read_text() == "top secret"


async def test_symlinked_directory_in_the_middle_of_a_path_is_refused(
    fs: FileTools, ctx: TaskContext, sandbox: Path, outside: Path
) -> None:
    (sandbox / "sub").mkdir()
    (sandbox / "sub" / "out").symlink_to(outside)
    with pytest.raises(PermanentError, match="resolves outside the sandbox"):
        await fs.read_file(ctx, {"path": "sub/out/secret.txt"})
    with pytest.raises(PermanentError, match="resolves outside the sandbox"):
        await fs.write_file(ctx, {"path": "sub/out/new.txt", "content": "x"})
    with pytest.raises(PermanentError, match="resolves outside the sandbox"):
        await fs.list_dir(ctx, {"path": "sub/out"})
    with pytest.raises(PermanentError, match="resolves outside the sandbox"):
        await fs.make_dir(ctx, {"path": "sub/out/d", "parents": True})
    assert names(outside) == ["secret.txt"]


async def test_dangling_symlink_to_outside_is_refused_and_creates_nothing(
    fs: FileTools, ctx: TaskContext, sandbox: Path, outside: Path
) -> None:
    (sandbox / "dangling").symlink_to(outside / "not-yet.txt")
    with pytest.raises(PermanentError, match="resolves outside the sandbox"):
        await fs.write_file(ctx, {"path": "dangling", "content": "x"})
    with pytest.raises(PermanentError, match="resolves outside the sandbox"):
        await fs.write_file(ctx, {"path": "dangling", "content": "x", "append": True})
    assert not (outside / "not-yet.txt").exists()


async def test_symlink_that_stays_inside_the_sandbox_is_followed(
    fs: FileTools, ctx: TaskContext, sandbox: Path
) -> None:
    (sandbox / "real").mkdir()
    (sandbox / "real" / "f.txt").write_text("inside")
    (sandbox / "alias").symlink_to("real")
    assert (await fs.read_file(ctx, {"path": "alias/f.txt"}))["content"] == "inside"


async def test_a_symlink_swapped_in_after_the_check_is_not_followed(
    fs: FileTools, ctx: TaskContext, sandbox: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the O_NOFOLLOW opens close: the path is checked, then replaced by a symlink."""
    (sandbox / "f.txt").write_text("inside")
    (sandbox / "d").mkdir()
    resolve = Sandbox.resolve

    def resolve_then_swap(self: Sandbox, field: str, path: str) -> str:
        real = resolve(self, field, path)
        target = sandbox / path.split("/")[0]
        if target.is_dir():
            target.rmdir()
            target.symlink_to(outside)
        else:
            target.unlink()
            target.symlink_to(outside / "secret.txt")
        return real

    monkeypatch.setattr(Sandbox, "resolve", resolve_then_swap)
    with pytest.raises(PermanentError, match="symlink"):
        await fs.read_file(ctx, {"path": "f.txt"})
    with pytest.raises(PermanentError, match="symlink"):
        await fs.write_file(ctx, {"path": "d/secret.txt", "content": "overwritten"})
    assert (outside / "secret.txt").read_text() == "top secret"


async def test_reading_more_than_the_output_cap_is_a_clear_error(
    fs: FileTools, ctx: TaskContext, sandbox: Path
) -> None:
    (sandbox / "big.txt").write_text("x" * 1001)
    with pytest.raises(PermanentError, match=r"has 1001 bytes, more than the limit of 1000 \(tools.output_max_bytes\)"):
        await fs.read_file(ctx, {"path": "big.txt"})
    (sandbox / "fits.txt").write_text("x" * 1000)
    assert (await fs.read_file(ctx, {"path": "fits.txt"}))["size"] == 1000


async def test_reading_a_fifo_is_refused_without_blocking(fs: FileTools, ctx: TaskContext, sandbox: Path) -> None:
    os.mkfifo(sandbox / "pipe")
    with pytest.raises(PermanentError, match="not a regular file"):
        await fs.read_file(ctx, {"path": "pipe"})


async def test_reading_a_directory_or_the_sandbox_itself_is_refused(fs: FileTools, ctx: TaskContext) -> None:
    await fs.make_dir(ctx, {"path": "d"})
    with pytest.raises(PermanentError, match="'d' is a directory"):
        await fs.read_file(ctx, {"path": "d"})
    with pytest.raises(InvalidInputError, match="must name a file"):
        await fs.read_file(ctx, {"path": "."})


@pytest.mark.parametrize(
    ("operation", "input", "message"),
    [
        ("read_file", {}, "fs.read: 'path' must be a string"),
        ("read_file", {"path": 3}, "fs.read: 'path' must be a string"),
        ("read_file", {"path": "a", "encoding": "latin-1"}, "fs.read: 'encoding' must be one of utf-8, base64"),
        ("read_file", {"path": "a", "offset": 3}, "fs.read: unknown field\\(s\\) 'offset'"),
        ("write_file", {"path": "a"}, "fs.write: 'content' must be a string"),
        ("write_file", {"path": "a", "content": "!", "encoding": "base64"}, "'content' is not valid base64"),
        ("write_file", {"path": "a", "content": "x", "append": "yes"}, "fs.write: 'append' must be true or false"),
        ("write_file", {"path": "", "content": "x"}, "fs.write: 'path' must be a non-empty path"),
        ("make_dir", {"path": "a", "parents": 1}, "fs.mkdir: 'parents' must be true or false"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(
    fs: FileTools, ctx: TaskContext, operation: str, input: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await getattr(fs, operation)(ctx, input)
