"""`claw audit verify`: showing the result, and verifying a database file without a coordinator."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from common.api import AuditReply
from common.config import load_config
from common.errors import StorageError
from storage.audit import ChainVerifier

CHUNK = 5000


def verify_offline(db_path: Path) -> AuditReply:
    """Walk the chain in `db_path` (read-only), with the audit key from the environment if set."""
    if not db_path.exists():
        raise StorageError(f"no database at {db_path}")
    key_env = load_config().coordinator.audit_key_env
    key = os.environ.get(key_env)
    verifier = ChainVerifier(key.encode() if key else None)
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
            conn.row_factory = sqlite3.Row
            last_id = 0
            while True:
                rows = conn.execute(
                    "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (last_id, CHUNK)
                ).fetchall()
                if not rows or verifier.feed(rows) is not None:
                    break
                last_id = rows[-1]["id"]
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read {db_path}: {exc}") from None
    broken = verifier.broken
    if broken is None:
        return AuditReply(ok=True, checked=verifier.checked)
    return AuditReply(ok=False, checked=verifier.checked, broken_event=broken.event_id, problem=broken.problem)


def render_audit(reply: AuditReply) -> None:
    """One line: intact, or the first event that is not."""
    if reply.ok:
        anchored = (
            f"; its head matches the anchor in NATS (event {reply.anchored_event})" if reply.anchored_event else ""
        )
        print(f"event log intact: {reply.checked} events checked{anchored}")
    else:
        print(f"event log TAMPERED: event {reply.broken_event}: {reply.problem} ({reply.checked} events checked)")
