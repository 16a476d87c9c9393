"""Probes against the audit log (issue 11, item 5), with `claw` processes on a real nats-server and
SQLite: a tail cut off the event log while the coordinator is stopped, an anchor moved back, an
anchor forged without the audit key, and events removed with the hashes after them recomputed.

Each is detected by `claw audit verify` run as a subprocess, with the coordinator stopped (`--db`)
or through it; the restarted coordinator does not launder a cut by anchoring the cut head.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
from pathlib import Path

import msgspec
import nats
import nkeys  # type: ignore[import-untyped]
import pytest
from nacl.signing import SigningKey

from cli.processes import Child
from communication.nats_server import EmbeddedNatsServer
from storage.audit import rehash_rows
from storage.audit_anchor import ANCHOR_KEY, Anchor, AnchorSigner
from tests.helpers import ProcessPool, wait_until

pytestmark = pytest.mark.e2e


def start(pool: ProcessPool) -> tuple[Child, Child]:
    """A coordinator and one worker, both answering."""
    coordinator = pool.spawn("coordinator", "coordinator", "start")
    worker = pool.spawn("worker", "worker", "start", "--node-id", "w1")
    wait_online(pool)
    return coordinator, worker


def wait_online(pool: ProcessPool) -> None:
    """Until the coordinator answers and sees the worker online."""

    def online() -> bool:
        result = pool.run("nodes", "--json")
        return result.returncode == 0 and any(n["status"] == "online" for n in json.loads(result.stdout))

    wait_until(online, timeout_s=30, interval_s=0.3, what="the worker online")


def run_tasks(pool: ProcessPool, tmp_path: Path, count: int) -> None:
    batch = tmp_path / f"batch-{count}.jsonl"
    batch.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(count)))
    result = pool.run("submit", "echo", "--input-file", str(batch), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr


def verify(pool: ProcessPool, *args: str) -> subprocess.CompletedProcess[str]:
    """`claw audit verify ARGS` as a subprocess."""
    return pool.run("audit", "verify", *args)


def anchored_head(pool: ProcessPool, at_least: int = 0) -> int:
    """Wait until the coordinator anchored the log's newest event (past `at_least`); its id."""

    def caught_up() -> int | None:
        result = verify(pool, "--json")
        if result.returncode != 0:
            return None
        reply = json.loads(result.stdout)
        anchored = reply.get("anchored_event")
        return anchored if anchored and anchored == reply.get("head_event") and anchored > at_least else None

    return wait_until(caught_up, timeout_s=40, interval_s=0.5, what="the head anchored")


def open_db(db: Path) -> sqlite3.Connection:
    """The database as an attacker with write access opens it: append-only triggers dropped."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    conn.execute("DROP TRIGGER IF EXISTS events_no_update")
    conn.execute("DROP TRIGGER IF EXISTS events_no_delete")
    return conn


def cut_tail(db: Path, keep_up_to: int) -> None:
    """Remove every event after `keep_up_to`, and set the id counter back so no gap shows."""
    conn = open_db(db)
    try:
        conn.execute("DELETE FROM events WHERE id > ?", (keep_up_to,))
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (keep_up_to,))
        conn.commit()
    finally:
        conn.close()


async def anchor_values(url: str, bucket: str) -> list[bytes]:
    """Every kept value of the anchor key, oldest first."""
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(bucket)
        return [entry.value or b"" for entry in await kv.history(ANCHOR_KEY)]
    finally:
        await nc.close()


async def put_anchor(url: str, bucket: str, value: bytes) -> None:
    """Write the anchor key as anyone who may write the bucket would."""
    nc = await nats.connect(url)
    try:
        await (await nc.jetstream().key_value(bucket)).put(ANCHOR_KEY, value)
    finally:
        await nc.close()


def attacker_signer() -> AnchorSigner:
    """An audit key of the attacker's own (not the coordinator's)."""
    return AnchorSigner(nkeys.encode_seed(bytes(SigningKey.generate()), nkeys.PREFIX_BYTE_USER))


def last_anchor(url: str, bucket: str) -> Anchor:
    return msgspec.json.decode(asyncio.run(anchor_values(url, bucket))[-1], type=Anchor)


@pytest.fixture
def bucket(prefix: str) -> str:
    return f"{prefix}_audit"


def test_a_tail_cut_while_the_coordinator_is_stopped_is_detected_and_not_anchored_over(
    processes: ProcessPool, nats_server: EmbeddedNatsServer, bucket: str, tmp_path: Path
) -> None:
    db = tmp_path / "claw.db"
    coordinator, worker = start(processes)
    run_tasks(processes, tmp_path, 4)
    anchored_head(processes)
    key = processes.run("audit", "key", "--db", str(db))
    assert key.returncode == 0 and key.stdout.startswith("U"), key.stderr
    public_key = key.stdout.strip()  # the copy kept off the machine
    assert (tmp_path / "auth" / "audit.nk").stat().st_mode & 0o777 == 0o600
    worker.stop()
    coordinator.stop()
    anchored = last_anchor(nats_server.client_url, bucket).event_id  # the last one before the stop
    assert verify(processes, "--db", str(db)).returncode == 0

    cut_tail(db, anchored - 3)

    for args in (("--db", str(db)), ("--db", str(db), "--public-key", public_key)):
        detected = verify(processes, *args)
        assert detected.returncode == 1, detected.stdout + detected.stderr
        assert detected.stdout.startswith(
            f"event log TAMPERED: event {anchored}: the log ends at event {anchored - 3}, but event {anchored} "
            "was anchored and signed: the log was cut short"
        ), detected.stdout
    # Without the anchors the chain alone looks whole: the anchor is what catches a cut tail.
    assert verify(processes, "--db", str(db), "--no-anchor").returncode == 0

    # The restarted coordinator refuses to move the anchor back, and says why.
    restarted = processes.spawn("coordinator", "coordinator", "start")
    wait_until(lambda: "audit.anchor_refused" in restarted.output(), timeout_s=30, what="the refusal logged")
    assert last_anchor(nats_server.client_url, bucket).event_id == anchored
    through = verify(processes)
    assert through.returncode == 1 and f"event {anchored}: the log ends at event" in through.stdout, through.stdout
    # New events reuse the cut ids: the anchored event's hash differs, and the anchor still stays.
    processes.spawn("worker", "worker", "start", "--node-id", "w1")
    run_tasks(processes, tmp_path, 3)
    later = verify(processes)
    assert later.returncode == 1 and f"TAMPERED: event {anchored}:" in later.stdout, later.stdout
    assert last_anchor(nats_server.client_url, bucket).event_id == anchored


def test_an_anchor_put_back_to_an_older_one_is_detected(
    processes: ProcessPool, nats_server: EmbeddedNatsServer, bucket: str, tmp_path: Path
) -> None:
    start(processes)
    run_tasks(processes, tmp_path, 2)
    first = anchored_head(processes)
    run_tasks(processes, tmp_path, 2)
    anchored_head(processes, at_least=first)
    second = last_anchor(nats_server.client_url, bucket).event_id
    # Through the coordinator, with the public key kept elsewhere: its key must be that one.
    kept = processes.run("audit", "key", "--db", str(tmp_path / "claw.db")).stdout.strip()
    assert verify(processes, "--public-key", kept).returncode == 0
    replaced = verify(processes, "--public-key", attacker_signer().public_key)
    assert replaced.returncode == 1 and "its audit key was replaced" in replaced.stdout, replaced.stdout
    older = next(
        value
        for value in asyncio.run(anchor_values(nats_server.client_url, bucket))
        if msgspec.json.decode(value, type=Anchor).event_id == first
    )

    asyncio.run(put_anchor(nats_server.client_url, bucket, older))  # a validly signed, older anchor

    moved_back = verify(processes)
    assert moved_back.returncode == 1, moved_back.stdout
    assert f"the anchor moved back from event {second} to {first}" in moved_back.stdout
    assert "an older anchor was put back" in moved_back.stdout
    offline = verify(processes, "--db", str(tmp_path / "claw.db"))
    assert offline.returncode == 1 and f"moved back from event {second} to {first}" in offline.stdout


def test_an_anchor_forged_without_the_key_is_detected_and_does_not_cover_a_cut(
    processes: ProcessPool, nats_server: EmbeddedNatsServer, bucket: str, tmp_path: Path
) -> None:
    db = tmp_path / "claw.db"
    coordinator, worker = start(processes)
    run_tasks(processes, tmp_path, 3)
    anchored_head(processes)
    worker.stop()
    coordinator.stop()
    anchored = last_anchor(nats_server.client_url, bucket).event_id
    cut_tail(db, anchored - 2)
    conn = sqlite3.connect(db)
    try:
        head_id, head_hash = conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        conn.close()

    # Cover for the cut: an anchor of the cut head, signed with a key of the attacker's own, then one unsigned.
    forged = attacker_signer().sign(head_id, head_hash, 1.0)
    asyncio.run(put_anchor(nats_server.client_url, bucket, msgspec.json.encode(forged)))
    unsigned = Anchor(event_id=head_id, hash=head_hash, at=2.0)
    asyncio.run(put_anchor(nats_server.client_url, bucket, msgspec.json.encode(unsigned)))

    detected = verify(processes, "--db", str(db))
    assert detected.returncode == 1, detected.stdout
    lines = detected.stdout.splitlines()
    assert lines[0].startswith(f"event log TAMPERED: event {anchored}: the log ends at event {head_id}")
    not_signed = [line for line in lines[1:] if "is not signed by the audit key" in line]
    assert len(not_signed) == 2 and all(f"(event {head_id})" in line for line in not_signed), lines


def test_events_removed_and_rehashed_leave_a_gap_in_the_ids_that_is_detected(
    processes: ProcessPool, tmp_path: Path
) -> None:
    db = tmp_path / "claw.db"
    coordinator, worker = start(processes)
    run_tasks(processes, tmp_path, 3)
    anchored_head(processes)
    worker.stop()
    coordinator.stop()
    conn = open_db(db)
    try:
        ids = [row[0] for row in conn.execute("SELECT id FROM events ORDER BY id")]
        removed = ids[len(ids) // 2]
        conn.execute("DELETE FROM events WHERE id = ?", (removed,))
        rows = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
        # Without CLAW_AUDIT_KEY the hashes are plain SHA-256: the attacker recomputes them all.
        conn.executemany("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?", list(rehash_rows(rows, None)))
        conn.commit()
    finally:
        conn.close()

    detected = verify(processes, "--db", str(db), "--no-anchor")

    assert detected.returncode == 1, detected.stdout
    assert detected.stdout.startswith(
        f"event log TAMPERED: event {removed + 1}: the event ids jump from {removed - 1} to it: "
        f"events {removed}..{removed} were removed"
    ), detected.stdout


def test_a_rewrite_re_signed_with_the_real_key_is_caught_by_the_kept_anchors(
    processes: ProcessPool, nats_server: EmbeddedNatsServer, bucket: str, tmp_path: Path
) -> None:
    """Root on the coordinator's machine holds the key: the anchors kept in NATS still catch it."""
    db = tmp_path / "claw.db"
    coordinator, worker = start(processes)
    run_tasks(processes, tmp_path, 2)
    first = anchored_head(processes)
    run_tasks(processes, tmp_path, 2)
    anchored_head(processes, at_least=first)
    worker.stop()
    coordinator.stop()
    conn = open_db(db)
    try:
        conn.execute("UPDATE events SET node_id = 'forged' WHERE id = ?", (first - 1,))
        rows = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
        conn.executemany("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?", list(rehash_rows(rows, None)))
        conn.commit()
        head_id, head_hash = conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    real_key = AnchorSigner.load_or_create(tmp_path / "auth" / "audit.nk")
    asyncio.run(put_anchor(nats_server.client_url, bucket, msgspec.json.encode(real_key.sign(head_id, head_hash, 9.0))))

    detected = verify(processes, "--db", str(db))

    assert detected.returncode == 1, detected.stdout
    caught = re.match(
        r"event log TAMPERED: event (\d+): its hash differs from the one anchored in NATS", detected.stdout
    )
    assert caught is not None, detected.stdout
    # The oldest kept anchor at or after the rewritten event: `first`, or one taken just before it.
    assert first - 1 <= int(caught.group(1)) <= first


def test_a_backup_restored_under_the_same_anchors_needs_a_signed_reset(
    processes: ProcessPool, nats_server: EmbeddedNatsServer, bucket: str, tmp_path: Path
) -> None:
    """A restore sets the log back like a cut does: TAMPERED, until someone holding the audit key
    starts a new anchor history (`claw audit reset`), which every later verification names."""
    db = tmp_path / "claw.db"
    coordinator, worker = start(processes)
    run_tasks(processes, tmp_path, 2)
    backup = tmp_path / "backup"
    assert processes.run("backup", "create", str(backup)).returncode == 0
    run_tasks(processes, tmp_path, 3)
    anchored_head(processes)
    worker.stop()
    coordinator.stop()
    restored = processes.run("backup", "restore", str(backup), "--force")
    assert restored.returncode == 0, restored.stderr
    assert "was cut short" in verify(processes, "--db", str(db)).stdout

    reset = processes.run("audit", "reset", "--db", str(db), "--reason", "restored the 09:00 backup")

    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.startswith("anchors reset at event ")
    after = verify(processes, "--db", str(db))
    assert after.returncode == 0, after.stdout
    assert "note: the anchors were reset at event" in after.stdout and "(restored the 09:00 backup)" in after.stdout
    # The coordinator takes the new history and anchors forward from it.
    restarted = processes.spawn("coordinator", "coordinator", "start")
    processes.spawn("worker", "worker", "start", "--node-id", "w1")
    wait_online(processes)
    reset_at = last_anchor(nats_server.client_url, bucket).event_id
    run_tasks(processes, tmp_path, 2)
    assert anchored_head(processes, at_least=reset_at) > reset_at
    assert "audit.anchor_refused" not in restarted.output()
    # Without the key there is no reset: one signed by another key is reported, and covers nothing.
    forged = attacker_signer().sign(1, "0" * 64, 5.0, reset="nothing to see")
    asyncio.run(put_anchor(nats_server.client_url, bucket, msgspec.json.encode(forged)))
    reported = verify(processes)
    assert reported.returncode == 1 and "is not signed by the audit key" in reported.stdout, reported.stdout
