"""SQLite's errors in words a user can act on ("the disk is full"), without loading the database
layer (the CLI's error handler uses this)."""

from __future__ import annotations

import sqlite3

# SQLite's primary result codes that say what the user can do something about.
DAMAGED = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
_REASONS = {
    "SQLITE_FULL": "the disk is full (free space on its file system)",
    "SQLITE_READONLY": "it is read-only (the file, its directory or its file system is not writable)",
    "SQLITE_CANTOPEN": "the file cannot be opened (its directory is missing or not writable, or the file "
    "system is read-only)",
    "SQLITE_IOERR": "an I/O error on its disk",
    "SQLITE_CORRUPT": "the file is damaged",
    "SQLITE_NOTADB": "the file is not a SQLite database",
    "SQLITE_BUSY": "another process holds it locked",
    "SQLITE_PERM": "permission denied",
}


def sqlite_error_name(exc: sqlite3.Error) -> str:
    """The primary result code of a sqlite3 error (`SQLITE_IOERR` for `SQLITE_IOERR_WRITE` too)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    for primary in _REASONS:
        if name == primary or name.startswith(primary + "_"):
            return primary
    return name


def describe_sqlite_error(exc: sqlite3.Error) -> str:
    """What went wrong with the state database, in words a user can act on, then SQLite's own."""
    reason = _REASONS.get(sqlite_error_name(exc))
    return f"{reason} ({exc})" if reason else str(exc)
