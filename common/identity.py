"""Who is on the bus: identity names, bus roles, and the credentials file that carries both.

An identity is one subject token (letters, digits, `-`, `_`; 64 at most): it appears in the subjects
its holder publishes on (`<prefix>.api.<identity>.<verb>`, a worker's node id in its events), and the
server's permissions bind those subjects to its credentials, so nobody can type another's name in.
Two names that differ only in case are the same identity (`normalise`): `claw creds create` refuses the
second, and approvals count distinct normalised names.

A credentials file (mode 0600) holds the identity's name, its roles, a worker's node id, and its NKey
seed, in the block nats-py and the `nats` tools know:

    # OpenClaw Cluster credentials: keep this file secret (mode 0600)
    identity: w7
    roles: worker
    node_id: w7
    skills: echo,text.upper         (a worker bound to a skill set; absent: every skill)
    -----BEGIN USER NKEY SEED-----
    SU...
    ------END USER NKEY SEED------
"""

from __future__ import annotations

import getpass
import os
import re
from enum import StrEnum
from pathlib import Path

import msgspec

from common.errors import CredentialsError, InvalidInputError
from common.verbs import Role

IDENTITY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SEED_BEGIN = "-----BEGIN USER NKEY SEED-----"
SEED_END = "------END USER NKEY SEED------"
CREDS_ENV = "CLAW_CREDS"


class BusRole(StrEnum):
    """What a connection may do on NATS (the server's permissions, `communication/auth_config.py`)."""

    COORDINATOR = "coordinator"  # everything
    WORKER = "worker"  # pull its skills' tasks, ack; events, heartbeats, claims under its node id
    CLIENT = "client"  # API requests under its own identity; replies and task state changes
    VIEWER = "viewer"  # the read-only API verbs
    # The HTTP gateway: a client that acts for the people it authenticated (auth.gateways), keeps its
    # API keys in its own KV bucket and follows the task feed.
    GATEWAY = "gateway"


# The API roles each bus role grants on its own; people get theirs listed (`claw creds create --role`).
BUS_ROLE_GRANTS: dict[BusRole, frozenset[Role]] = {
    BusRole.COORDINATOR: frozenset(Role),
    BusRole.WORKER: frozenset({Role.WORKER}),
    # At most these pass on to the people it acts for: every role of a person, none of a worker's.
    BusRole.GATEWAY: frozenset(Role) - {Role.WORKER},
    BusRole.CLIENT: frozenset({Role.SUBMITTER, Role.VIEWER}),
    BusRole.VIEWER: frozenset({Role.VIEWER}),
}


def check_identity(name: str) -> str:
    """Return `name` if it can be an identity, else raise saying what one looks like."""
    if not IDENTITY_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"'{name}' is not a valid identity name: use 1-64 letters, digits, '-' or '_' (no spaces or dots)"
        )
    return name


def normalise(name: str) -> str:
    """The form two names are compared in: `Alice` and `alice` are one identity."""
    return name.strip().lower()


def default_identity() -> str:
    """The name a process without credentials uses (the OS user, made a valid token): on a server
    without authentication anyone can claim any name, which is why `claw up` turns it on."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "anonymous"
    token = re.sub(r"[^A-Za-z0-9_-]", "-", user)[:64].strip("-_") or "anonymous"
    return normalise(token)


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed credentials file (the seed stays a string only as long as a connection needs it)."""

    identity: str
    roles: tuple[str, ...]
    seed: str
    node_id: str | None = None
    path: str | None = None
    # A worker's skill set (exact names): the server lets it pull only these skills' consumers.
    # None: every skill.
    skills: tuple[str, ...] | None = None

    @property
    def bus_role(self) -> BusRole:
        """The bus role these credentials connect with."""
        for role in (BusRole.COORDINATOR, BusRole.WORKER, BusRole.GATEWAY):
            if role.value in self.roles:
                return role
        return BusRole.VIEWER if set(self.roles) <= {Role.VIEWER.value} else BusRole.CLIENT


def render_credentials(
    *, identity: str, roles: list[str], seed: str, node_id: str | None, skills: list[str] | None = None
) -> str:
    """The text of a credentials file (`skills`: a worker's skill set, None for every skill)."""
    lines = [
        "# OpenClaw Cluster credentials: keep this file secret (mode 0600).",
        "# Use it with `claw --creds FILE ...` or CLAW_CREDS=FILE; revoke with `claw creds revoke NAME`.",
        f"identity: {identity}",
        f"roles: {','.join(roles)}",
    ]
    if node_id:
        lines.append(f"node_id: {node_id}")
    if skills is not None:
        lines.append(f"skills: {','.join(skills)}")
    lines += [SEED_BEGIN, seed, SEED_END, ""]
    return "\n".join(lines)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (created 0600, never briefly wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def read_credentials(path: str | Path) -> Credentials:
    """Parse a credentials file; raise `CredentialsError` with what is wrong and what to do."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CredentialsError(
            f"cannot read credentials file {path}: {exc.strerror or exc}; "
            "issue one with `claw creds create` on the cluster's machine"
        ) from None
    fields: dict[str, str] = {}
    seed = ""
    lines = iter(text.splitlines())
    for line in lines:
        line = line.strip()
        if line == SEED_BEGIN:
            seed = next(lines, "").strip()
            break
        if line and not line.startswith("#"):
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
    if not seed.startswith("SU") or "identity" not in fields:
        raise CredentialsError(
            f"{path} is not an OpenClaw credentials file (no identity or NKey seed); issue one with `claw creds create`"
        )
    roles = tuple(r.strip() for r in fields.get("roles", "").split(",") if r.strip())
    skills = None if "skills" not in fields else tuple(k.strip() for k in fields["skills"].split(",") if k.strip())
    return Credentials(
        identity=fields["identity"], roles=roles, seed=seed, node_id=fields.get("node_id"), path=str(path),
        skills=skills,
    )  # fmt: skip
