"""Signed anchors of the event log's head, and the rules that check them (issue 11, item 5).

The coordinator puts, every few seconds, the newest event's id and hash in KV `<prefix>_audit` (key
`head`, history 64), signed with an ed25519 key that lives beside the database at
`<db dir>/auth/audit.nk` (an NKeys user seed, mode 0600) and nowhere in it. Whoever checks the log
(`claw audit verify`, through the coordinator or with `--db` while it is stopped) holds the public
key, ideally a copy kept on another machine (`--public-key`), and reads the anchor history:

- an anchor with no valid signature was not written by the coordinator: it is reported, and ignored;
- the anchored event id only moves forward: a validly signed anchor below an earlier one is an old
  anchor replayed, which is reported;
- the highest validly signed anchor must still be in the log with the same hash: a log that ends
  before it was cut short; a different hash means the history up to it was rewritten.

This module is pure: no NATS, no database. `coordinator/audit.py` and `cli/commands/audit.py` feed it.
"""

from __future__ import annotations

import base64
import datetime
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nkeys  # no stubs (pyproject.toml ignores its missing imports); a small, well-kept NATS library
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from common.api import AuditReply
from common.errors import AuditKeyError
from storage.audit import ChainVerifier

ANCHOR_KEY = "head"
KEY_DIR = "auth"
KEY_FILE = "audit.nk"
# What a signature covers, besides the anchor's fields: a signature cannot be reused for other data.
SIGNING_CONTEXT = "claw-audit-anchor/1"
_encoder = msgspec.json.Encoder()


class Anchor(msgspec.Struct, frozen=True, kw_only=True):
    """The chain's head at `at`: its newest event's id and hash, signed by the coordinator's audit
    key (`key`: its public key; `signature`: base64 ed25519). Anchors from before signing have
    neither."""

    event_id: int
    hash: str
    at: float = 0.0
    key: str | None = None
    signature: str | None = None
    # Set on an anchor that starts a new history (`claw audit reset`, after restoring a backup or
    # replacing the key): why. The anchors before it are not checked against this log.
    reset: str | None = None

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers."""
        fields: list[object] = [SIGNING_CONTEXT, self.event_id, self.hash, self.at]
        if self.reset is not None:
            fields.append(self.reset)
        return _encoder.encode(fields)


def key_path(db_path: Path | str) -> Path:
    """Where the audit key of the database at `db_path` lives: `<db dir>/auth/audit.nk`."""
    return Path(db_path).resolve().parent / KEY_DIR / KEY_FILE


class AnchorSigner:
    """The coordinator's audit key: signs anchors."""

    def __init__(self, seed: bytes) -> None:
        try:
            self._pair = nkeys.from_seed(bytearray(seed))
            self.public_key: str = self._pair.public_key.decode()
        except (nkeys.NkeysError, ValueError, TypeError) as exc:
            raise AuditKeyError(f"the audit key is not an NKeys seed ({exc})") from None

    @classmethod
    def load_or_create(cls, path: Path) -> AnchorSigner:
        """Read the key at `path`, creating it (mode 0600, its folder 0700) when there is none.

        A key that others may read is refused: with it anyone on the machine could sign anchors."""
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            seed = nkeys.encode_seed(bytes(SigningKey.generate()), nkeys.PREFIX_BYTE_USER)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(seed + b"\n")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise AuditKeyError(
                f"the audit key {path} may be read by other users (mode {mode:04o}); `chmod 600 {path}` and start again"
            )
        signer = cls(path.read_bytes().strip())
        return signer

    def sign(self, event_id: int, hash: str, at: float, *, reset: str | None = None) -> Anchor:
        """A signed anchor of the head (`event_id`, `hash`) at `at` (`reset`: it starts a new history)."""
        unsigned = Anchor(event_id=event_id, hash=hash, at=at, key=self.public_key, reset=reset)
        signature = self._pair.sign(unsigned.signed_bytes())
        return msgspec.structs.replace(unsigned, signature=base64.b64encode(signature).decode())


def public_key_of(path: Path) -> str:
    """The public key of the audit key file at `path` (no mode check: reading it is enough)."""
    try:
        return AnchorSigner(path.read_bytes().strip()).public_key
    except OSError as exc:
        raise AuditKeyError(
            f"cannot read the audit key {path}: {exc.strerror or exc}; pass its public half with --public-key "
            "(`claw audit key`, run by the key's owner, prints it)"
        ) from None


def verify_key(public_key: str) -> VerifyKey:
    """The ed25519 key of an NKeys user public key (`U...`); a clear error for anything else."""
    text = public_key.strip()
    try:
        data = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        data = b""
    if len(data) != 35 or data[0] != nkeys.PREFIX_BYTE_USER or nkeys.crc16_checksum(data[:-2]) != data[-2:]:
        raise AuditKeyError(
            f"'{shorten(text)}' is not an audit public key (a 56-character NKeys user key starting with U); "
            "`claw audit key --db PATH` prints it"
        )
    return VerifyKey(data[1:-2])


def signed_by(anchor: Anchor, key: VerifyKey) -> bool:
    """Whether `anchor` carries a valid signature by `key`."""
    if anchor.signature is None:
        return False
    try:
        key.verify(anchor.signed_bytes(), base64.b64decode(anchor.signature, validate=True))
    except (BadSignatureError, ValueError):
        return False
    return True


def shorten(text: str, length: int = 20) -> str:
    """`text`, cut to `length` characters for an error line."""
    return text if len(text) <= length else text[: length - 1] + "…"


# --- checking an anchor history ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One revision of the anchor key: its KV revision and value (None: deleted or purged there)."""

    revision: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class AnchorFinding:
    """What an anchor history says: the highest anchor to trust (None: none), every validly signed
    anchor kept, oldest first (each must still match the log), and what is wrong."""

    trusted: Anchor | None
    problems: tuple[str, ...]
    signed: tuple[Anchor, ...] = ()
    # The last validly signed reset anchor, and how many entries before it were not checked.
    reset: Anchor | None = None
    skipped: int = 0

    def reset_note(self) -> str | None:
        """What a verification says about the reset the history starts at, if any."""
        if self.reset is None:
            return None
        when = datetime.datetime.fromtimestamp(self.reset.at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"the anchors were reset at event {self.reset.event_id} on {when} ({self.reset.reset}); "
            f"{self.skipped} earlier anchor(s) not checked"
        )

    def anchored_ids(self) -> list[int]:
        """The event ids whose stored hashes the verdict needs."""
        return sorted({anchor.event_id for anchor in self.signed})


def read_history(entries: Sequence[HistoryEntry], key: VerifyKey | None) -> AnchorFinding:
    """Check a key's revisions, oldest first: signatures (when `key` is known), forward-only moves,
    deletions. With no key, nothing can be trusted: unsigned anchors prove nothing. Unsigned anchors
    older than every signed one were written before anchors were signed: ignored, not reported."""
    start = _last_reset(entries, key)
    reset = None if start is None else _decoded(entries[start])
    entries = entries[start or 0 :]
    problems: list[str] = []
    trusted: Anchor | None = None
    signed: list[Anchor] = []
    for entry in entries:
        if entry.value is None:
            problems.append(
                f"the anchor was deleted at revision {entry.revision}: someone removed the coordinator's anchors"
            )
            continue
        try:
            anchor = msgspec.json.decode(entry.value, type=Anchor)
        except msgspec.DecodeError:
            problems.append(
                f"the anchor at revision {entry.revision} is not an anchor: it was not written by the coordinator"
            )
            continue
        if key is None or _legacy(anchor, signed, problems):
            continue
        if not signed_by(anchor, key):
            problems.append(
                f"the anchor at revision {entry.revision} (event {anchor.event_id}) is not signed by the audit key: "
                "it was not written by the coordinator"
            )
            continue
        if trusted is not None and anchor.event_id < trusted.event_id:
            problems.append(
                f"the anchor moved back from event {trusted.event_id} to {anchor.event_id} at revision "
                f"{entry.revision}: an older anchor was put back"
            )
            continue
        trusted = anchor
        signed.append(anchor)
    return AnchorFinding(trusted, tuple(problems), tuple(signed), reset=reset, skipped=start or 0)


def _decoded(entry: HistoryEntry) -> Anchor | None:
    if entry.value is None:
        return None
    try:
        return msgspec.json.decode(entry.value, type=Anchor)
    except msgspec.DecodeError:
        return None


def _last_reset(entries: Sequence[HistoryEntry], key: VerifyKey | None) -> int | None:
    """The index of the last reset anchor signed by `key` (only the key's holder can start a new history)."""
    if key is None:
        return None
    for index in range(len(entries) - 1, -1, -1):
        anchor = _decoded(entries[index])
        if anchor is not None and anchor.reset is not None and signed_by(anchor, key):
            return index
    return None


def _legacy(anchor: Anchor, signed: list[Anchor], problems: list[str]) -> bool:
    """Whether `anchor` is one a version before signing wrote: no key, no signature, and nothing
    signed or wrong before it (after a signed anchor, an unsigned one is a forgery)."""
    return anchor.key is None and anchor.signature is None and not signed and not problems


def compare_head(anchor: Anchor, head_id: int | None, stored_hash: str | None) -> str | None:
    """What is wrong with the log given its trusted anchor: the log's newest id, and the hash it
    stores for the anchored event (None: no such event). None when the log agrees."""
    if head_id is None or head_id < anchor.event_id or stored_hash is None:
        ends = "is empty" if head_id is None else f"ends at event {head_id}"
        return (
            f"the log {ends}, but event {anchor.event_id} was anchored and signed: the log was cut short "
            "(events were removed from its end)"
        )
    if stored_hash != anchor.hash:
        return "its hash differs from the one anchored in NATS and signed: the history up to it was rewritten"
    return None


def judge(
    verifier: ChainVerifier,
    finding: AnchorFinding | None,
    stored: Mapping[int, str | None],
    *,
    public_key: str | None,
    note: str | None = None,
) -> AuditReply:
    """The verdict on a walked chain and its anchor history (`stored`: the log's hash of each
    anchored event, `finding.anchored_ids()`). A fault in the log comes first; then a cut below the
    highest signed anchor; then the oldest signed anchor whose event changed since (a rewrite,
    even one re-signed at the head afterwards); then faults of the anchor history itself."""
    problems = list(finding.problems) if finding is not None else []
    trusted = finding.trusted if finding is not None else None
    reset_note = finding.reset_note() if finding is not None else None
    note = "; ".join(n for n in (note, reset_note) if n) or None
    intact = AuditReply(
        ok=True,
        checked=verifier.checked,
        head_event=verifier.last_id,
        anchor_key=public_key,
        anchor_problems=problems,
        anchor_note=note,
        anchored_event=None if trusted is None else trusted.event_id,
    )
    broken = verifier.broken
    if broken is not None:
        return msgspec.structs.replace(intact, ok=False, broken_event=broken.event_id, problem=broken.problem)
    if trusted is not None and finding is not None:
        for anchor in (trusted, *finding.signed):
            wrong = compare_head(anchor, verifier.last_id, stored.get(anchor.event_id))
            if wrong is not None:
                return msgspec.structs.replace(intact, ok=False, broken_event=anchor.event_id, problem=wrong)
    if problems:
        return msgspec.structs.replace(intact, ok=False, problem=problems[0])
    return intact
