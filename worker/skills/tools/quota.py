"""Size limits of workspaces: `tools.workspace_max_bytes` for a whole workspace and
`tools.write_max_bytes` for one file.

fs.write checks both before it writes. A tool process cannot write a file larger than
`write_max_bytes` (RLIMIT_FSIZE, set by the launcher: the write fails with EFBIG, or a program that
does not expect it is ended by SIGXFSZ), and the workspace is measured after each run: a run that
left it over its quota fails, naming the sizes (the files stay, so that a later step can delete
some). Usage is the space the files take on disk (allocated blocks, each inode once), so neither a
sparse file nor hard links inflate it.

Everything here blocks on the file system: call it from a thread.
"""

from __future__ import annotations

import os
import stat

from common.errors import PermanentError

BLOCK_BYTES = 512


def workspace_usage(root: str) -> int:
    """Bytes on disk of everything below `root` (symlinks are not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * BLOCK_BYTES
            if stat.S_ISDIR(info.st_mode):
                pending.append(entry.path)
    return total


def check_workspace_after_run(skill: str, root: str, max_bytes: int) -> None:
    """Fail the run that left its workspace over its quota."""
    used = workspace_usage(root)
    if used > max_bytes:
        raise PermanentError(
            f"{skill}: the run left its workspace holding {used} bytes, more than tools.workspace_max_bytes "
            f"({max_bytes}); delete files in it before its next step"
        )


def check_write(skill: str, shown: str, *, root: str, new_size: int, old_size: int, limits: tuple[int, int]) -> None:
    """Refuse a write that would make a file larger than the per-file limit, or the workspace larger
    than its quota. `limits` is (write_max_bytes, workspace_max_bytes)."""
    write_max, workspace_max = limits
    if new_size > write_max:
        raise PermanentError(
            f"{skill}: '{shown}' would hold {new_size} bytes, more than tools.write_max_bytes ({write_max})"
        )
    used = workspace_usage(root)
    if used - old_size + new_size > workspace_max:
        raise PermanentError(
            f"{skill}: writing '{shown}' would make the workspace hold about {used - old_size + new_size} bytes, "
            f"more than tools.workspace_max_bytes ({workspace_max})"
        )
