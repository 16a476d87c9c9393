"""Finding the processes a tool run started, from outside its sandbox.

Inside bwrap a task's processes have the ids of their own PID namespace, so a test cannot use the ids
a task reports; it marks them instead (a unique number in their command line, e.g. a `sleep`
duration) or looks for processes working in the task's workspace.
"""

from __future__ import annotations

import contextlib
import os
import secrets

import psutil


def new_marker() -> str:
    """A unique token that is also a valid `sleep` duration (about an hour)."""
    return f"3600.{secrets.randbelow(10**9):09d}"


def marked(token: str) -> list[psutil.Process]:
    """Live processes (zombies excluded) whose command line holds `token`."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if process.info["status"] == psutil.STATUS_ZOMBIE or process.pid == os.getpid():
                continue
            if any(token in arg for arg in process.info["cmdline"] or ()):
                found.append(process)
    return found


def working_in(directory: str) -> list[psutil.Process]:
    """Live processes whose working directory is `directory` or below it."""
    found = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error):
            if process.info["status"] == psutil.STATUS_ZOMBIE or process.pid == os.getpid():
                continue
            cwd = process.cwd()
            if cwd == directory or cwd.startswith(directory + os.sep):
                found.append(process)
    return found


def zombie_children() -> list[psutil.Process]:
    """This process's children that ended without being reaped."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child)
    return found
