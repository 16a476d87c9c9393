"""`claw audit verify|key`: the event log's hash chain and its signed anchors, through the coordinator
or in a database file (with the coordinator stopped)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Annotated

import typer
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError

from cli.context import client_config, command_config, connect
from cli.options import JsonFlag
from cli.output import emit_json
from cli.runner import fail, run_async
from common.api import AuditReply
from common.clock import SYSTEM_CLOCK
from common.config import ClawConfig
from common.errors import AuditKeyError, ClawError, InvalidInputError, NatsUnavailableError, StorageError
from communication.codec import encode
from communication.connection import NatsConnection
from communication.topology import Topology
from storage.audit import ChainVerifier
from storage.audit_anchor import (
    ANCHOR_KEY,
    Anchor,
    AnchorSigner,
    HistoryEntry,
    judge,
    key_path,
    public_key_of,
    read_history,
    verify_key,
)

group = typer.Typer(help="The tamper-evident event log.", no_args_is_help=True)

# Events read per query when verifying a file.
CHUNK = 5000
NO_KEY = (
    "no public key to check the anchors with: no audit key at {path}; pass --public-key "
    "(`claw audit key` prints it on the coordinator's machine)"
)

PublicKeyOption = Annotated[
    str | None,
    typer.Option(
        "--public-key",
        help="The audit key's public half (from `claw audit key`), kept off this machine; "
        "default: the one of <db dir>/auth/audit.nk.",
    ),
]


@group.command("verify")
def audit_verify(
    ctx: typer.Context,
    db: Annotated[Path | None, typer.Option(help="Check this database file directly, without a coordinator.")] = None,
    public_key: PublicKeyOption = None,
    no_anchor: Annotated[
        bool, typer.Option("--no-anchor", help="With --db: the chain alone, without NATS (a cut tail goes unseen).")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Walk the event log's hash chain and check it against the signed anchors in NATS: name the first
    event that was altered, removed or inserted, a tail cut off, or an anchor not written by the
    coordinator."""
    if db is not None:
        cfg = client_config(ctx)
        reply = run_async(verify_offline(db, cfg, public_key=public_key, anchors=not no_anchor))
        _show(reply, json_out)
        raise typer.Exit(0 if reply.ok else 1)
    cfg = client_config(ctx)

    async def main() -> bool:
        async with await connect(cfg) as client:
            reply = await client.audit_verify()
        if public_key is not None:
            reply = _with_expected_key(reply, public_key)
        _show(reply, json_out)
        return reply.ok

    raise typer.Exit(0 if run_async(main()) else 1)


@group.command("key")
def audit_key(
    ctx: typer.Context,
    db: Annotated[Path | None, typer.Option(help="The database whose audit key to show (default: the config's).")] = (
        None
    ),
    json_out: JsonFlag = False,
) -> None:
    """Print the public key that verifies the audit anchors; keep a copy off this machine and pass it
    to `claw audit verify --public-key`."""
    path = key_path(db if db is not None else command_config(ctx).coordinator.db_path)
    if not path.exists():
        fail(f"no audit key at {path}: the coordinator creates it when it starts", kind=AuditKeyError.code)
    try:
        public_key = public_key_of(path)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    if json_out:
        emit_json({"public_key": public_key, "key_file": str(path)})
    else:
        print(public_key)


@group.command("reset")
def audit_reset(
    ctx: typer.Context,
    db: Annotated[Path, typer.Option(help="The database whose current head starts the new anchor history.")],
    reason: Annotated[str, typer.Option(help="Why (recorded, signed, in every later verification).")],
    json_out: JsonFlag = False,
) -> None:
    """Start a new anchor history at the database's head, signed with its audit key: after restoring
    a backup (the log is legitimately shorter than the anchors) or replacing the key. Every later
    `claw audit verify` names the reset; the anchors before it are no longer checked."""
    cfg = client_config(ctx)
    if not reason.strip():
        fail("--reason is empty: say why the anchors are reset (it is kept, signed)", kind="invalid_input")
    anchor = run_async(reset_anchors(db, cfg, reason.strip()))
    if json_out:
        emit_json(anchor)
    else:
        print(f"anchors reset at event {anchor.event_id}, signed by {anchor.key}: {reason.strip()}")


async def reset_anchors(db_path: Path, config: ClawConfig, reason: str) -> Anchor:
    """Write a signed reset anchor of `db_path`'s head; refused when the chain itself is broken."""
    verifier = await asyncio.to_thread(walk_file, db_path, config)
    if verifier.broken is not None:
        raise InvalidInputError(
            f"the event log is broken at event {verifier.broken.event_id} ({verifier.broken.problem}); "
            "a reset anchors an intact log only"
        )
    if verifier.last_id is None:
        raise InvalidInputError(f"the event log in {db_path} is empty: there is nothing to anchor")
    signer = await asyncio.to_thread(AnchorSigner.load_or_create, key_path(db_path))
    head_hash = (await asyncio.to_thread(_event_hashes, db_path, [verifier.last_id]))[verifier.last_id] or ""
    anchor = signer.sign(verifier.last_id, head_hash, SYSTEM_CLOCK.now(), reset=reason)
    conn = await _connect_for_anchors(config)
    try:
        kv = await Topology(conn, config.jetstream).audit_kv()
        from coordinator.audit import anchor_history  # not at import: `claw --help` stays light

        entries = await anchor_history(kv)
        if entries:
            await kv.update(ANCHOR_KEY, encode(anchor), last=entries[-1].revision)
        else:
            await kv.create(ANCHOR_KEY, encode(anchor))
    except KeyWrongLastSequenceError:
        raise InvalidInputError("the anchor changed while resetting (is the coordinator running?); run again") from None
    finally:
        await conn.close()
    return anchor


def _show(reply: AuditReply, json_out: bool) -> None:
    if json_out:
        emit_json(reply)
    else:
        render_audit(reply)


def _with_expected_key(reply: AuditReply, expected: str) -> AuditReply:
    """A coordinator checking with another key than the one kept elsewhere has had its key replaced."""
    verify_key(expected)  # a clear error for something that is no key
    if reply.anchor_key == expected.strip():
        return reply
    problem = (
        f"the coordinator checks the anchors with key {reply.anchor_key}, not the one given: its audit key was "
        "replaced; check the database with `claw audit verify --db PATH --public-key KEY`"
    )
    return AuditReply(ok=False, checked=reply.checked, problem=problem, anchor_key=reply.anchor_key)


async def verify_offline(db_path: Path, config: ClawConfig, *, public_key: str | None, anchors: bool) -> AuditReply:
    """Walk the chain in `db_path` (read-only) and check it against the anchors in NATS, signed by
    `public_key` (default: the audit key beside the database)."""
    verifier = await asyncio.to_thread(walk_file, db_path, config)
    if not anchors:
        note = "anchors not checked (--no-anchor): a tail cut off the log goes unseen"
        return judge(verifier, None, {}, public_key=None, note=note)
    key_text = public_key if public_key is not None else await asyncio.to_thread(_local_public_key, db_path)
    key = None if key_text is None else verify_key(key_text)
    entries = await _read_anchors(config)
    finding = read_history(entries, key)
    if key is None and entries:
        verdict = judge(verifier, finding, {}, public_key=None)
        if not verdict.ok:
            return verdict
        return AuditReply(ok=False, checked=verifier.checked, problem=NO_KEY.format(path=key_path(db_path)))
    stored = await asyncio.to_thread(_event_hashes, db_path, finding.anchored_ids())
    shown_key = None if key_text is None else key_text.strip()
    return judge(verifier, finding, stored, public_key=shown_key, note=None if entries else "no anchor in NATS yet")


def _local_public_key(db_path: Path) -> str | None:
    path = key_path(db_path)
    return public_key_of(path) if path.exists() else None


async def _connect_for_anchors(config: ClawConfig) -> NatsConnection:
    try:
        return await NatsConnection.connect(config.nats, name="claw-audit", retry_s=2.0)
    except NatsUnavailableError as exc:
        raise NatsUnavailableError(
            f"{exc}; the anchors live in NATS: without them a cut tail goes unseen (--no-anchor checks the chain alone)"
        ) from None


async def _read_anchors(config: ClawConfig) -> list[HistoryEntry]:
    conn = await _connect_for_anchors(config)
    try:
        kv = await conn.js.key_value(conn.subjects.audit_bucket)
        from coordinator.audit import anchor_history

        return await anchor_history(kv)
    except BucketNotFoundError:
        return []
    finally:
        await conn.close()


def walk_file(db_path: Path, config: ClawConfig) -> ChainVerifier:
    """Walk the chain in `db_path` (read-only), with the audit HMAC key from the environment if set."""
    if not db_path.exists():
        raise StorageError(f"no database at {db_path}")
    key = os.environ.get(config.coordinator.audit_key_env)
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
    return verifier


def _event_hashes(db_path: Path, event_ids: list[int]) -> dict[int, str | None]:
    """The stored hash of each event (None: no such event); at most 64 ids, one query each."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        rows = {i: conn.execute("SELECT hash FROM events WHERE id = ?", (i,)).fetchone() for i in event_ids}
    return {i: None if row is None else str(row[0]) for i, row in rows.items()}


def render_audit(reply: AuditReply) -> None:
    """One line: intact, or the first thing that is not; then every other fault of the anchors."""
    if reply.ok:
        if reply.anchored_event:
            anchored = f"; its head matches the anchor in NATS (event {reply.anchored_event}, signed)"
            if reply.anchor_note:
                anchored += f"\n  note: {reply.anchor_note}"
        else:
            anchored = f"; {reply.anchor_note}" if reply.anchor_note else ""
        print(f"event log intact: {reply.checked} events checked{anchored}")
        return
    where = f"event {reply.broken_event}: " if reply.broken_event is not None else ""
    print(f"event log TAMPERED: {where}{reply.problem} ({reply.checked} events checked)")
    for problem in reply.anchor_problems:
        if problem != reply.problem:
            print(f"  also: {problem}")


def register(app: typer.Typer) -> None:
    """Add `claw audit ...`."""
    app.add_typer(group, name="audit")
