"""The tamper-evident event log: a hash chain over the append-only `events` table.

Each event row stores `prev_hash` (the hash of the row before it, by id; 64 zeros for the first) and
`hash` = SHA-256 over `prev_hash` and the row's canonical content (its event id, task, attempt,
kind, states, node, time and data). Changing a row breaks its own hash; removing or inserting one
breaks the next row's `prev_hash`. Ids are contiguous from 1 (AUTOINCREMENT; rows are never
deleted), so a gap in them is removed events even where the hashes after it were recomputed.
`verify_chain` walks the table and names the first broken event.

Limits, stated plainly: someone who can write the database file can also recompute every hash after
a change. Two things close most of that gap: with `CLAW_AUDIT_KEY` set (`coordinator.audit_key_env`)
the hashes are HMACs that cannot be recomputed without the key, and the coordinator anchors the
chain's head (last id and hash) in NATS KV, signed (storage/audit_anchor.py), so history rewritten
up to the anchor, or a tail cut off while the coordinator was stopped, is detected too.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgspec

GENESIS = "0" * 64
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where the chain breaks: the first event found wrong and why."""

    event_id: int
    problem: str


def canonical(
    event_id: str | None,
    task_id: str,
    attempt: int,
    kind: str,
    from_state: str | None,
    to_state: str | None,
    node_id: str | None,
    at: float,
    data: str | None,
) -> bytes:
    """The bytes an event's hash covers."""
    return _encoder.encode([event_id, task_id, attempt, kind, from_state, to_state, node_id, at, data])


def chain_hash(prev_hash: str, content: bytes, key: bytes | None) -> str:
    """The hash of one event given its predecessor's hash."""
    message = prev_hash.encode() + b"\n" + content
    if key:
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def _row_content(row: sqlite3.Row) -> bytes:
    return canonical(
        row["event_id"],
        row["task_id"],
        row["attempt"],
        row["kind"],
        row["from_state"],
        row["to_state"],
        row["node_id"],
        row["at"],
        row["data"],
    )


class ChainVerifier:
    """Checks rows fed in id order, chunk after chunk; stops at the first break."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key
        self._expected_prev = GENESIS
        self.checked = 0
        self.broken: ChainBreak | None = None
        # The id of the last row checked: ids are contiguous from 1 (AUTOINCREMENT, and no row is
        # ever deleted), so a gap is events removed, even when the hashes after it were recomputed.
        self.last_id: int | None = None

    def feed(self, rows: Iterable[sqlite3.Row]) -> ChainBreak | None:
        """Check the next rows; returns the first break found so far, or None."""
        if self.broken is not None:
            return self.broken
        for row in rows:
            self.checked += 1
            self.broken = self._check(row)
            if self.broken is not None:
                return self.broken
            self._expected_prev = row["hash"]
            self.last_id = row["id"]
        return None

    def _check(self, row: sqlite3.Row) -> ChainBreak | None:
        if row["hash"] is None:
            return ChainBreak(row["id"], "it has no hash: it was written around the coordinator")
        if row["prev_hash"] != self._expected_prev:
            return ChainBreak(
                row["id"], "its link to the previous event is wrong: an event before it was removed or inserted"
            )
        if chain_hash(row["prev_hash"], _row_content(row), self._key) != row["hash"]:
            return ChainBreak(row["id"], "its content does not match its hash: it was altered")
        return self._check_id(row["id"])

    def _check_id(self, event_id: int) -> ChainBreak | None:
        expected = 1 if self.last_id is None else self.last_id + 1
        if event_id == expected:
            return None
        if self.last_id is None:
            return ChainBreak(event_id, f"the log starts at event {event_id}, not 1: the events before it were removed")
        return ChainBreak(
            event_id, f"the event ids jump from {self.last_id} to it: events {expected}..{event_id - 1} were removed"
        )


def rehash_rows(rows: Iterable[sqlite3.Row], key: bytes | None) -> Iterator[tuple[str, str, int]]:
    """(prev_hash, hash, id) for rows in id order, from the start of the chain (for the backfill)."""
    prev = GENESIS
    for row in rows:
        digest = chain_hash(prev, _row_content(row), key)
        yield prev, digest, row["id"]
        prev = digest
