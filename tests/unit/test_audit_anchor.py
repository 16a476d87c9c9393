"""Signed anchors and the checks on an anchor history, and the chain's contiguous ids (pure parts)."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import msgspec
import pytest

from common.errors import AuditKeyError
from storage.audit import GENESIS, ChainVerifier, canonical, chain_hash
from storage.audit_anchor import (
    Anchor,
    AnchorSigner,
    HistoryEntry,
    compare_head,
    judge,
    key_path,
    public_key_of,
    read_history,
    signed_by,
    verify_key,
)


def signer_at(tmp_path: Path) -> AnchorSigner:
    return AnchorSigner.load_or_create(tmp_path / "auth" / "audit.nk")


def entry(revision: int, anchor: Anchor | None) -> HistoryEntry:
    return HistoryEntry(revision, None if anchor is None else msgspec.json.encode(anchor))


def test_the_key_is_created_private_beside_the_database_and_read_back(tmp_path: Path) -> None:
    assert key_path(tmp_path / "claw.db") == tmp_path.resolve() / "auth" / "audit.nk"
    signer = signer_at(tmp_path)
    path = tmp_path / "auth" / "audit.nk"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert signer_at(tmp_path).public_key == signer.public_key == public_key_of(path)
    assert signer.public_key.startswith("U") and len(signer.public_key) == 56


def test_a_key_others_may_read_is_refused(tmp_path: Path) -> None:
    signer_at(tmp_path)
    (tmp_path / "auth" / "audit.nk").chmod(0o644)
    with pytest.raises(AuditKeyError, match=r"may be read by other users \(mode 0644\); `chmod 600"):
        signer_at(tmp_path)


def test_a_signature_covers_every_field_and_only_the_key_verifies_it(tmp_path: Path) -> None:
    signer = signer_at(tmp_path)
    key = verify_key(signer.public_key)
    anchor = signer.sign(7, "ab" * 32, 1.5)
    assert signed_by(anchor, key)
    for change in ({"event_id": 8}, {"hash": "cd" * 32}, {"at": 2.0}, {"signature": None}, {"signature": "!!"}):
        assert not signed_by(msgspec.structs.replace(anchor, **change), key), change
    other = AnchorSigner.load_or_create(tmp_path / "other" / "audit.nk")
    assert not signed_by(other.sign(7, "ab" * 32, 1.5), key)


@pytest.mark.parametrize("text", ["", "not-a-key", "SUAM2" + "A" * 53, "U" + "A" * 55])
def test_something_that_is_no_public_key_is_one_clear_error(text: str) -> None:
    with pytest.raises(AuditKeyError, match="is not an audit public key"):
        verify_key(text)


def test_the_history_trusts_the_highest_signed_anchor_and_names_every_fault(tmp_path: Path) -> None:
    signer = signer_at(tmp_path)
    key = verify_key(signer.public_key)
    first, second = signer.sign(5, "a" * 64, 1.0), signer.sign(9, "b" * 64, 2.0)
    forged = AnchorSigner.load_or_create(tmp_path / "x" / "audit.nk").sign(3, "c" * 64, 3.0)
    history = [
        entry(1, first),
        entry(2, second),
        entry(3, forged),
        entry(4, Anchor(event_id=99, hash="d" * 64)),  # unsigned
        HistoryEntry(5, b"garbage"),
        entry(6, first),  # an older anchor put back
        entry(7, None),  # deleted
    ]
    finding = read_history(history, key)
    assert finding.trusted == second
    assert [p.split(":")[0] for p in finding.problems] == [
        "the anchor at revision 3 (event 3) is not signed by the audit key",
        "the anchor at revision 4 (event 99) is not signed by the audit key",
        "the anchor at revision 5 is not an anchor",
        "the anchor moved back from event 9 to 5 at revision 6",
        "the anchor was deleted at revision 7",
    ]
    assert read_history(history[:2], None).trusted is None  # no key: nothing is trusted


def test_the_log_is_compared_with_its_trusted_anchor() -> None:
    anchor = Anchor(event_id=10, hash="a" * 64)
    assert compare_head(anchor, 10, "a" * 64) is None
    assert compare_head(anchor, 12, "a" * 64) is None
    assert "the log ends at event 8, but event 10 was anchored" in (compare_head(anchor, 8, None) or "")
    assert "the log is empty" in (compare_head(anchor, None, None) or "")
    assert "rewritten" in (compare_head(anchor, 12, "b" * 64) or "")


def chain_rows(ids: list[int]) -> list[sqlite3.Row]:
    """Event rows with these ids, correctly chained (as someone who recomputed the hashes made them)."""
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    conn.execute(
        "CREATE TABLE events (id INTEGER, event_id TEXT, task_id TEXT, attempt INTEGER, kind TEXT, from_state TEXT,"
        " to_state TEXT, node_id TEXT, at REAL, data TEXT, prev_hash TEXT, hash TEXT)"
    )
    prev = GENESIS
    for event_id in ids:
        digest = chain_hash(prev, canonical(None, "t1", 0, "log", None, None, None, float(event_id), None), None)
        conn.execute(
            "INSERT INTO events VALUES (?, NULL, 't1', 0, 'log', NULL, NULL, NULL, ?, NULL, ?, ?)",
            (event_id, float(event_id), prev, digest),
        )
        prev = digest
    return conn.execute("SELECT * FROM events ORDER BY id").fetchall()


def test_contiguous_ids_pass_and_a_gap_or_a_missing_start_is_named() -> None:
    whole = ChainVerifier(None)
    assert whole.feed(chain_rows([1, 2, 3])) is None and whole.last_id == 3
    gap = ChainVerifier(None).feed(chain_rows([1, 2, 5, 6]))
    assert gap is not None and gap.event_id == 5
    assert gap.problem == "the event ids jump from 2 to it: events 3..4 were removed"
    start = ChainVerifier(None).feed(chain_rows([4, 5]))
    assert start is not None and start.problem == "the log starts at event 4, not 1: the events before it were removed"


def test_every_signed_anchor_kept_must_still_match_the_log(tmp_path: Path) -> None:
    """A rewrite re-signed at the head with the real key is caught by an earlier anchor still kept."""
    signer = signer_at(tmp_path)
    key = verify_key(signer.public_key)
    history = [entry(1, signer.sign(2, "old2", 1.0)), entry(2, signer.sign(3, "new3", 2.0))]
    finding = read_history(history, key)
    assert finding.anchored_ids() == [2, 3]
    verifier = ChainVerifier(None)
    verifier.feed(chain_rows([1, 2, 3]))
    intact = judge(verifier, finding, {2: "old2", 3: "new3"}, public_key=signer.public_key)
    assert intact.ok and intact.anchored_event == 3 and intact.head_event == 3
    rewritten = judge(verifier, finding, {2: "new2", 3: "new3"}, public_key=signer.public_key)
    assert (rewritten.ok, rewritten.broken_event) == (False, 2) and "rewritten" in (rewritten.problem or "")


def test_unsigned_anchors_from_before_signing_are_ignored_only_before_the_first_signed_one(tmp_path: Path) -> None:
    signer = signer_at(tmp_path)
    key = verify_key(signer.public_key)
    legacy = Anchor(event_id=4, hash="a" * 64)  # what the version before signing wrote
    upgraded = read_history([entry(1, legacy), entry(2, signer.sign(6, "b" * 64, 1.0))], key)
    assert upgraded.problems == () and upgraded.trusted is not None and upgraded.trusted.event_id == 6
    late = read_history([entry(1, signer.sign(6, "b" * 64, 1.0)), entry(2, legacy)], key)
    assert len(late.problems) == 1 and "is not signed by the audit key" in late.problems[0]


def test_a_reset_signed_with_the_key_starts_a_new_history_and_one_signed_otherwise_does_not(tmp_path: Path) -> None:
    signer = signer_at(tmp_path)
    key = verify_key(signer.public_key)
    old = [entry(1, signer.sign(50, "a" * 64, 1.0)), entry(2, signer.sign(80, "b" * 64, 2.0))]
    reset = signer.sign(30, "c" * 64, 3.0, reset="restored a backup")
    finding = read_history([*old, entry(3, reset), entry(4, signer.sign(35, "d" * 64, 4.0))], key)
    assert finding.problems == () and finding.trusted is not None and finding.trusted.event_id == 35
    assert finding.anchored_ids() == [30, 35] and finding.skipped == 2
    assert "reset at event 30 on 1970-01-01 00:00:03 UTC (restored a backup); 2 earlier" in (finding.reset_note() or "")
    assert not signed_by(msgspec.structs.replace(reset, reset="something else"), key)  # the reason is signed

    forged = AnchorSigner.load_or_create(tmp_path / "x" / "audit.nk").sign(30, "c" * 64, 3.0, reset="cover")
    ignored = read_history([*old, entry(3, forged)], key)
    assert ignored.reset is None and ignored.trusted is not None and ignored.trusted.event_id == 80
    assert len(ignored.problems) == 1 and "not signed by the audit key" in ignored.problems[0]


def test_an_unreadable_key_file_says_to_pass_the_public_key(tmp_path: Path) -> None:
    with pytest.raises(AuditKeyError, match=r"cannot read the audit key .*; pass its public half with --public-key"):
        public_key_of(tmp_path / "auth" / "audit.nk")
