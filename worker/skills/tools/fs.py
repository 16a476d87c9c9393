"""The file skills `fs.read`, `fs.write`, `fs.list` and `fs.mkdir`, confined to the task's sandbox.

File I/O blocks, so each operation runs in a thread (asyncio.to_thread) and never stalls the worker's
loop. Paths are checked by `Sandbox.resolve` and opened component by component without following
symlinks; a file with a hard link outside the workspace is refused (sandbox.py says why). fs.write
keeps a file within `tools.write_max_bytes` and the workspace within `tools.workspace_max_bytes`
(quota.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from typing import Any

from common.config import ToolSettings
from common.errors import InvalidInputError, PermanentError
from worker.context import TaskContext
from worker.skills import Skill
from worker.skills.tools import inputs
from worker.skills.tools.isolation import sandbox_user
from worker.skills.tools.quota import check_write
from worker.skills.tools.sandbox import Sandbox, Workspace

ENCODINGS = ("utf-8", "base64")
MAX_LIST_ENTRIES = 10_000
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_MODE = 0o644


class FileTools:
    """The fs.* handlers; they close over the tool settings."""

    def __init__(self, settings: ToolSettings) -> None:
        self._settings = settings
        self._owner = sandbox_user(settings)
        self._limits = (settings.write_max_bytes, settings.workspace_max_bytes)

    def skills(self) -> list[Skill]:
        """The four file skills."""
        return [
            Skill("fs.read", self.read_file, "reads a file of the task's sandbox"),
            Skill("fs.write", self.write_file, "writes (or appends to) a file of the task's sandbox"),
            Skill("fs.list", self.list_dir, "lists a directory of the task's sandbox"),
            Skill("fs.mkdir", self.make_dir, "makes a directory in the task's sandbox"),
        ]

    async def read_file(self, ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        """{path, encoding: utf-8|base64} -> {path, size, content}; at most tools.output_max_bytes."""
        skill = "fs.read"
        inputs.check_fields(skill, input, ("path", "encoding", "workspace"))
        path = inputs.string(skill, input, "path")
        encoding = inputs.choice(skill, input, "encoding", ENCODINGS, "utf-8")
        workspace = self._workspace(skill, ctx, input)
        data = await asyncio.to_thread(_read, workspace, path, self._settings.output_max_bytes)
        if encoding == "base64":
            content = base64.b64encode(data).decode("ascii")
        else:
            try:
                content = data.decode("utf-8")
            except UnicodeDecodeError:
                raise PermanentError(f"{skill}: '{path}' is not UTF-8 text; read it with encoding 'base64'") from None
        return {"path": _shown(path), "size": len(data), "content": content}

    async def write_file(self, ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        """{path, content, encoding, append?, make_parents?} -> {path, size}: the file's size after."""
        skill = "fs.write"
        inputs.check_fields(skill, input, ("path", "content", "encoding", "append", "make_parents", "workspace"))
        path = inputs.string(skill, input, "path")
        content = inputs.string(skill, input, "content")
        encoding = inputs.choice(skill, input, "encoding", ENCODINGS, "utf-8")
        append = inputs.boolean(skill, input, "append")
        make_parents = inputs.boolean(skill, input, "make_parents")
        data = _decode_content(skill, content, encoding)
        workspace = self._workspace(skill, ctx, input)
        size = await asyncio.to_thread(
            _write, workspace, path, data, append=append, make_parents=make_parents, limits=self._limits
        )
        return {"path": _shown(path), "size": size}

    async def list_dir(self, ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        """{path="."} -> {path, entries: [{name, type: file|dir|symlink|other, size}], truncated}."""
        skill = "fs.list"
        inputs.check_fields(skill, input, ("path", "workspace"))
        path = inputs.string(skill, input, "path", default=".")
        entries, truncated = await asyncio.to_thread(_list, self._workspace(skill, ctx, input), path)
        return {"path": _shown(path), "entries": entries, "truncated": truncated}

    async def make_dir(self, ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        """{path, parents?} -> {path}; with `parents`, missing parents are made and an existing
        directory is fine (like `mkdir -p`)."""
        skill = "fs.mkdir"
        inputs.check_fields(skill, input, ("path", "parents", "workspace"))
        path = inputs.string(skill, input, "path")
        parents = inputs.boolean(skill, input, "parents")
        await asyncio.to_thread(_mkdir, self._workspace(skill, ctx, input), path, parents=parents)
        return {"path": _shown(path)}

    def _workspace(self, skill: str, ctx: TaskContext, input: dict[str, Any]) -> Workspace:
        return Workspace.of(skill, self._settings.sandbox_root, ctx, input, self._owner)


def _read(workspace: Workspace, path: str, limit: int) -> bytes:
    sandbox = workspace.open()
    parts = _file_parts(sandbox, path)
    try:
        with sandbox.directory(parts[:-1]) as dir_fd, _opened(parts[-1], READ_FLAGS, dir_fd) as fd:
            _require_regular(sandbox, fd, path)
            sandbox.require_single_link(fd, _shown(path))
            size = os.fstat(fd).st_size
            data = _read_up_to(fd, limit + 1) if size <= limit else b""
    except OSError as exc:
        raise sandbox.os_error(exc, _shown(path)) from None
    if size > limit or len(data) > limit:
        raise PermanentError(
            f"fs.read: '{_shown(path)}' has {max(size, len(data))} bytes, more than the limit of {limit} "
            "(tools.output_max_bytes)"
        )
    return data


def _write(
    workspace: Workspace, path: str, data: bytes, *, append: bool, make_parents: bool, limits: tuple[int, int]
) -> int:
    sandbox = workspace.open()
    parts = _file_parts(sandbox, path)
    try:
        with sandbox.directory(parts[:-1], create=make_parents) as dir_fd:
            if append:
                return _append(sandbox, dir_fd, parts[-1], data, path, limits)
            old_size = _size_of(parts[-1], dir_fd)
            check_write(
                "fs.write", _shown(path), root=sandbox.root, new_size=len(data), old_size=old_size, limits=limits
            )
            return _replace(sandbox, dir_fd, parts[-1], data)
    except OSError as exc:
        raise sandbox.os_error(exc, _shown(path)) from None


def _append(sandbox: Sandbox, dir_fd: int, name: str, data: bytes, path: str, limits: tuple[int, int]) -> int:
    with _opened(name, APPEND_FLAGS, dir_fd, FILE_MODE) as fd:
        _require_regular(sandbox, fd, path)
        sandbox.require_single_link(fd, _shown(path))
        old_size = os.fstat(fd).st_size
        new_size = old_size + len(data)
        check_write("fs.write", _shown(path), root=sandbox.root, new_size=new_size, old_size=old_size, limits=limits)
        sandbox.own(fd)
        _write_all(fd, data)
        return os.fstat(fd).st_size


def _size_of(name: str, dir_fd: int) -> int:
    """The size of the regular file `name` a write replaces (0 when there is none)."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def _replace(sandbox: Sandbox, dir_fd: int, name: str, data: bytes) -> int:
    """Write `data` to a new file beside `name`, then rename it over `name`: readers see the old
    content or the new one, never a part."""
    temp = f".{name[:200]}.{secrets.token_hex(6)}.tmp"
    try:
        with _opened(temp, TEMP_FLAGS, dir_fd, FILE_MODE) as fd:
            sandbox.own(fd)
            _write_all(fd, data)
            os.fsync(fd)
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    return len(data)


def _list(workspace: Workspace, path: str) -> tuple[list[dict[str, Any]], bool]:
    sandbox = workspace.open()
    parts = sandbox.parts(sandbox.resolve("path", path))
    try:
        with sandbox.directory(parts) as dir_fd, os.scandir(dir_fd) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
            return [_entry(e) for e in entries[:MAX_LIST_ENTRIES]], len(entries) > MAX_LIST_ENTRIES
    except OSError as exc:
        raise sandbox.os_error(exc, _shown(path)) from None


def _entry(entry: os.DirEntry[str]) -> dict[str, Any]:
    info = entry.stat(follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(info.st_mode):
        kind = "dir"
    elif stat.S_ISREG(info.st_mode):
        kind = "file"
    else:
        kind = "other"
    return {"name": entry.name, "type": kind, "size": info.st_size}


def _mkdir(workspace: Workspace, path: str, *, parents: bool) -> None:
    sandbox = workspace.open()
    parts = sandbox.parts(sandbox.resolve("path", path))
    if not parts:
        if parents:
            return
        raise PermanentError(f"fs.mkdir: '{_shown(path)}' is the sandbox itself, which exists")
    try:
        with sandbox.directory(parts[:-1], create=parents) as dir_fd:
            try:
                sandbox.make_dir(parts[-1], dir_fd)
            except FileExistsError:
                if not parents or not stat.S_ISDIR(os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    raise
    except OSError as exc:
        raise sandbox.os_error(exc, _shown(path)) from None


# --- helpers ---------------------------------------------------------------------------------------


def _file_parts(sandbox: Sandbox, path: str) -> list[str]:
    parts = sandbox.parts(sandbox.resolve("path", path))
    if not parts:
        raise InvalidInputError(f"{sandbox.skill}: 'path' must name a file, not the sandbox itself")
    return parts


@contextlib.contextmanager
def _opened(name: str, flags: int, dir_fd: int, mode: int = FILE_MODE) -> Iterator[int]:
    fd = os.open(name, flags, mode, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _require_regular(sandbox: Sandbox, fd: int, path: str) -> None:
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        raise PermanentError(f"{sandbox.skill}: '{_shown(path)}' is a directory")
    if not stat.S_ISREG(mode):
        raise PermanentError(f"{sandbox.skill}: '{_shown(path)}' is not a regular file")


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0 and (chunk := os.read(fd, min(remaining, 1024 * 1024))):
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _decode_content(skill: str, content: str, encoding: str) -> bytes:
    if encoding == "utf-8":
        try:
            return content.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(f"{skill}: 'content' holds characters UTF-8 cannot encode") from None
    try:
        return base64.b64decode(content, validate=True)
    except binascii.Error:
        raise InvalidInputError(f"{skill}: 'content' is not valid base64") from None


def _shown(path: str) -> str:
    """A path as results and messages show it: normalised, relative to the sandbox."""
    return os.path.normpath(path)
