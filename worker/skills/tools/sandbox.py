"""Sandboxes: the one directory a task's file and process tools may work in.

A task works in `<tools.sandbox_root>/<workspace>`, where `workspace` is a slug the input may name
(so the steps of one agent session share files) and defaults to the task id. Paths in inputs are
relative to it. A path is checked twice: after resolving it (realpath, then commonpath against the
workspace, which refuses `..` escapes and symlinks anywhere in the path that lead outside), and again
when it is used: files and directories are opened one component at a time from the workspace's own
descriptor with O_NOFOLLOW, so a symlink swapped in after the check is refused, not followed.
A file with more than one hard link is refused for reads and appends unless every link is inside the
workspace: a hard link is the one way to a file outside that no path check can see.

When the worker runs as root, tool processes run as the sandbox user (isolation.py): workspaces and
what the fs skills create in them belong to that user (mode 0700: no other user may read them), and
the sandbox root is 0711 so the user can reach its workspace but not list the others.

Everything here blocks on the file system: call it from a thread (asyncio.to_thread).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from common.errors import InvalidInputError, PermanentError, RetryableError, TaskError
from worker.context import TaskContext
from worker.skills.tools import inputs
from worker.skills.tools.isolation import SandboxUser

WORKSPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NO_SPACE_RETRY_S = 60.0
# How many entries a search for the other links of a hard-linked file looks at before giving up.
MAX_LINK_SEARCH_ENTRIES = 100_000


def workspace_name(skill: str, ctx: TaskContext, input: dict[str, Any]) -> str:
    """The input's `workspace` slug, or the task id."""
    name = inputs.optional_string(skill, input, "workspace")
    if name is None:
        return ctx.task_id
    if not WORKSPACE_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"{skill}: 'workspace' must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Workspace:
    """A workspace named but not yet opened: opening touches the disk, so it happens in a thread."""

    skill: str
    sandbox_root: str
    name: str
    owner: SandboxUser | None = None

    @classmethod
    def of(
        cls, skill: str, sandbox_root: str, ctx: TaskContext, input: dict[str, Any], owner: SandboxUser | None = None
    ) -> Workspace:
        """The workspace the input names (`workspace`), or the task's own; `owner`: the sandbox
        user, when the worker runs as root."""
        return cls(skill, sandbox_root, workspace_name(skill, ctx, input), owner)

    def open(self) -> Sandbox:
        """The workspace directory under the sandbox root, created (mode 0700, owned by the sandbox
        user) on first use."""
        try:
            os.makedirs(self.sandbox_root, mode=0o700, exist_ok=True)
            root = os.path.realpath(self.sandbox_root)
            if self.owner is not None:
                os.chmod(root, 0o711)  # noqa: S103 - others may pass (to their workspace), not list
            path = os.path.join(root, self.name)
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, mode=0o700)
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode) and self.owner is not None:
                _give(path, info, self.owner)
        except OSError as exc:
            raise PermanentError(f"{self.skill}: cannot create the workspace '{self.name}': {exc.strerror}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise PermanentError(f"{self.skill}: workspace '{self.name}' is not a directory; refused")
        return Sandbox(self.skill, path, self.owner)


def _give(path: str, info: os.stat_result, owner: SandboxUser) -> None:
    """Make the workspace the sandbox user's own, private to it."""
    if (info.st_uid, info.st_gid) != (owner.uid, owner.gid):
        os.chown(path, owner.uid, owner.gid, follow_symlinks=False)
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700, follow_symlinks=False)


@dataclass(frozen=True, slots=True)
class Sandbox:
    """One workspace directory (`root`, a real path) and the checks that keep a skill inside it."""

    skill: str
    root: str
    owner: SandboxUser | None = None

    def remove(self) -> None:
        """Delete the workspace and everything in it (symlinks are removed, never followed)."""
        shutil.rmtree(self.root, ignore_errors=True)

    def resolve(self, field: str, path: str) -> str:
        """The real absolute path that `path` (relative to the workspace) names; refuses escapes."""
        if not path or "\x00" in path:
            raise InvalidInputError(f"{self.skill}: '{field}' must be a non-empty path without NUL characters")
        if os.path.isabs(path):
            raise InvalidInputError(f"{self.skill}: '{field}' must be relative to the sandbox, not absolute")
        if os.path.normpath(path).split(os.sep)[0] == "..":
            raise InvalidInputError(f"{self.skill}: '{field}' {path!r} leaves the sandbox through '..'; refused")
        real = os.path.realpath(os.path.join(self.root, path))
        if os.path.commonpath([self.root, real]) != self.root:
            raise PermanentError(
                f"{self.skill}: '{field}' {path!r} resolves outside the sandbox through a symlink; refused"
            )
        return real

    def parts(self, real: str) -> list[str]:
        """The components of `real` below the workspace ([] for the workspace itself)."""
        relative = os.path.relpath(real, self.root)
        return [] if relative == "." else relative.split(os.sep)

    @contextlib.contextmanager
    def directory(self, parts: list[str], *, create: bool = False) -> Iterator[int]:
        """A descriptor of the directory `parts` below the workspace, opened without following any
        symlink; missing directories are made when `create` is true."""
        fd = os.open(self.root, DIR_FLAGS)
        try:
            for index, part in enumerate(parts):
                if create:
                    with contextlib.suppress(FileExistsError):
                        self.make_dir(part, fd)
                next_fd = self._open_child(fd, part, parts[: index + 1])
                os.close(fd)
                fd = next_fd
            yield fd
        finally:
            os.close(fd)

    def make_dir(self, name: str, dir_fd: int) -> None:
        """mkdir `name` in the directory `dir_fd`, owned by the sandbox user."""
        os.mkdir(name, mode=0o777, dir_fd=dir_fd)
        if self.owner is not None:
            # Not following a symlink: one swapped in since the mkdir keeps its own owner.
            os.chown(name, self.owner.uid, self.owner.gid, dir_fd=dir_fd, follow_symlinks=False)

    def own(self, fd: int) -> None:
        """Give a file this workspace's fs skills made to the sandbox user."""
        if self.owner is not None and os.fstat(fd).st_uid != self.owner.uid:
            os.fchown(fd, self.owner.uid, self.owner.gid)

    def require_single_link(self, fd: int, shown: str) -> None:
        """Refuse an open file with a hard link outside the workspace (checked on the descriptor,
        so a file swapped in after the path check is the one checked)."""
        info = os.fstat(fd)
        if info.st_nlink <= 1 or self._links_inside(info) >= info.st_nlink:
            return
        raise PermanentError(
            f"{self.skill}: '{shown}' has {info.st_nlink} hard links, some outside the sandbox; refused"
        )

    def _links_inside(self, target: os.stat_result) -> int:
        """How many names in the workspace are links to `target` (0 when there are too many entries
        to look at)."""
        found, seen, pending = 0, 0, [self.root]
        while pending:
            with contextlib.suppress(OSError), os.scandir(pending.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if seen > MAX_LINK_SEARCH_ENTRIES:
                        return 0
                    info = entry.stat(follow_symlinks=False)
                    if (info.st_ino, info.st_dev) == (target.st_ino, target.st_dev):
                        found += 1
                    elif stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
        return found

    def _open_child(self, parent_fd: int, part: str, shown: list[str]) -> int:
        try:
            return os.open(part, DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP) and _is_symlink(part, parent_fd):
                raise PermanentError(
                    f"{self.skill}: '{'/'.join(shown)}' became a symlink while in use; refused"
                ) from None
            raise

    def os_error(self, exc: OSError, shown: str) -> TaskError:
        """The task error for a failed file operation on `shown` (a path relative to the workspace)."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return RetryableError(f"{self.skill}: no space left to write '{shown}'", retry_after_s=NO_SPACE_RETRY_S)
        return PermanentError(f"{self.skill}: '{shown}': {_OS_MESSAGES.get(exc.errno or 0, exc.strerror)}")


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


_OS_MESSAGES = {
    errno.ENOENT: "does not exist",
    errno.EEXIST: "already exists",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "is a directory",
    errno.ENOTEMPTY: "is a directory that is not empty",
    errno.ELOOP: "is a symlink that appeared while in use; refused",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "the name is too long",
}
