"""`claw audit verify`: the event log's hash chain, through the coordinator or in a database file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cli.context import client_config, connect
from cli.options import JsonFlag
from cli.output import emit_json
from cli.runner import fail, run_async
from common.api import AuditReply
from common.config import load_config
from common.errors import ClawError, StorageError

group = typer.Typer(help="The tamper-evident event log.", no_args_is_help=True)

# Events read per query when verifying a file.
CHUNK = 5000


@group.command("verify")
def audit_verify(
    ctx: typer.Context,
    db: Annotated[Path | None, typer.Option(help="Check this database file directly, without a coordinator.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Walk the event log's hash chain; name the first event that was altered, removed or inserted."""
    if db is not None:
        try:
            reply = verify_offline(db)
        except ClawError as exc:
            fail(str(exc), kind=exc.code)
        _show(reply, json_out)
        raise typer.Exit(0 if reply.ok else 1)
    cfg = client_config(ctx)

    async def main() -> bool:
        async with await connect(cfg) as client:
            reply = await client.audit_verify()
        _show(reply, json_out)
        return reply.ok

    raise typer.Exit(0 if run_async(main()) else 1)


def _show(reply: AuditReply, json_out: bool) -> None:
    if json_out:
        emit_json(reply)
    else:
        render_audit(reply)


def verify_offline(db_path: Path) -> AuditReply:
    """Walk the chain in `db_path` (read-only), with the audit key from the environment if set."""
    import sqlite3

    from storage.audit import ChainVerifier

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


def register(app: typer.Typer) -> None:
    """Add `claw audit ...`."""
    app.add_typer(group, name="audit")
