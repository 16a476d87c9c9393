"""The identity registry: who may connect to the cluster's nats-server, with which roles.

It is one file, `<auth dir>/identities.json` (mode 0600), holding each identity's name, roles, NKey
public key (never its seed: that is only in the credentials file handed to its holder) and, for a
worker, its node id. `claw creds create|revoke` edit it and regenerate the server's permissions
(`communication/auth_config.py`); the coordinator reads the API roles of each identity from it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgspec

from common.errors import CredentialsError, InvalidInputError
from common.identity import BUS_ROLE_GRANTS, BusRole, normalise, write_private
from common.verbs import Role
from communication.subjects import check_skill_name

REGISTRY_FILE = "identities.json"
# Bus roles and the API roles a person or program may hold, as `claw creds create --role` takes them.
ROLE_NAMES = tuple(dict.fromkeys([*(r.value for r in BusRole), *(r.value for r in Role)]))


class IdentityRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One identity that may connect: its name, roles, public key and (a worker's) node id."""

    name: str
    roles: list[str]
    public_key: str
    node_id: str | None = None
    # The cluster prefix its permissions are for.
    prefix: str = "claw"
    created_at: float = 0.0
    # The tenant its submits are for (None: the one a request names, else `default`).
    tenant: str | None = None
    # A worker's skill set (exact skill names): the server lets it pull and ack only these skills'
    # task consumers. None: every skill.
    skills: list[str] | None = None

    @property
    def bus_role(self) -> BusRole:
        """How it connects: coordinator, worker, client (a person or program) or viewer."""
        for role in (BusRole.COORDINATOR, BusRole.WORKER, BusRole.GATEWAY):
            if role.value in self.roles:
                return role
        return BusRole.VIEWER if set(self.roles) <= {Role.VIEWER.value} else BusRole.CLIENT

    @property
    def api_roles(self) -> frozenset[Role]:
        """The API roles it holds: those listed, and what its bus role grants."""
        listed = {Role(r) for r in self.roles if r in Role._value2member_map_}
        return frozenset(listed) | BUS_ROLE_GRANTS[self.bus_role]


class _RegistryFile(msgspec.Struct, kw_only=True):
    version: int = 1
    identities: list[IdentityRecord] = []


def registry_path(auth_dir: str | Path) -> Path:
    """Where the registry of an auth folder is."""
    return Path(auth_dir) / REGISTRY_FILE


def parse_roles(roles: list[str]) -> list[str]:
    """Check role names (a bus role, or API roles), refusing unknown ones with the known list."""
    unknown = [r for r in roles if r not in ROLE_NAMES]
    if unknown or not roles:
        raise InvalidInputError(
            f"unknown role {', '.join(unknown) or '(none given)'}: use one of {', '.join(ROLE_NAMES)}"
        )
    bus = [r for r in roles if r in (BusRole.COORDINATOR, BusRole.WORKER, BusRole.GATEWAY)]
    if bus and len(roles) > 1:
        raise InvalidInputError(f"the {bus[0]} role cannot be combined with other roles")
    return sorted(set(roles), key=ROLE_NAMES.index)


class IdentityRegistry:
    """The registry file, loaded; `save` writes it back (0600, replaced atomically)."""

    def __init__(self, path: Path, identities: list[IdentityRecord]) -> None:
        self.path = path
        self._by_name = {normalise(i.name): i for i in identities}

    @classmethod
    def load(cls, auth_dir: str | Path) -> IdentityRegistry:
        """Read the registry of `auth_dir` (empty when there is none yet)."""
        path = registry_path(auth_dir)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(path, [])
        except OSError as exc:
            raise CredentialsError(f"cannot read the identity registry {path}: {exc.strerror or exc}") from None
        try:
            return cls(path, msgspec.json.decode(data, type=_RegistryFile).identities)
        except msgspec.DecodeError as exc:
            raise CredentialsError(f"the identity registry {path} is damaged: {exc}") from None

    def save(self) -> None:
        """Write the registry (a temporary file renamed over it, so a reader never sees half)."""
        tmp = self.path.with_suffix(".tmp")
        write_private(tmp, msgspec.json.format(msgspec.json.encode(_RegistryFile(identities=self.all())).decode()))
        os.replace(tmp, self.path)

    def all(self) -> list[IdentityRecord]:
        """Every identity, by name."""
        return sorted(self._by_name.values(), key=lambda i: i.name)

    def get(self, name: str) -> IdentityRecord | None:
        """The identity called `name` (case does not matter)."""
        return self._by_name.get(normalise(name))

    def add(self, record: IdentityRecord) -> None:
        """Add an identity; refuses a name taken (also by another case) and a worker node id taken."""
        if normalise(record.name) in self._by_name:
            raise InvalidInputError(
                f"an identity named {record.name} exists; pick another name, or `claw creds revoke "
                f"{record.name}` first to issue new credentials for it"
            )
        if record.node_id and any(i.node_id == record.node_id for i in self._by_name.values()):
            raise InvalidInputError(f"node id {record.node_id} already has credentials; revoke them first")
        self._by_name[normalise(record.name)] = record

    def remove(self, name: str) -> IdentityRecord:
        """Remove an identity, returning it; raises if there is none by that name."""
        record = self._by_name.pop(normalise(name), None)
        if record is None:
            raise InvalidInputError(f"no identity named {name}; `claw creds list` shows them")
        return record


def new_record(
    name: str,
    roles: list[str],
    public_key: str,
    node_id: str | None,
    prefix: str,
    tenant: str | None = None,
    skills: list[str] | None = None,
) -> IdentityRecord:
    """A registry entry for freshly issued credentials."""
    return IdentityRecord(
        name=name, roles=roles, public_key=public_key, node_id=node_id, prefix=prefix, created_at=time.time(),
        tenant=tenant, skills=skills,
    )  # fmt: skip


def parse_skill_set(text: str) -> list[str] | None:
    """A worker's `--skills` (comma-separated exact skill names), checked; `*` alone is every skill (None).

    Patterns (`text.*`) are refused: a task consumer's name is one subject token (`tasks-text-upper-normal`),
    and nats-server's wildcards match whole tokens only, so the server could not enforce one.
    """
    if text.strip() == "*":
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InvalidInputError("--skills names no skill: give skill names separated by commas (e.g. echo,text.upper)")
    for name in names:
        if "*" in name or ">" in name:
            raise InvalidInputError(
                f"--skills takes exact skill names, not patterns ('{name}'): the server matches a task "
                "consumer's name whole; list the skills (e.g. text.upper,text.lower), or omit --skills for every skill"
            )
        check_skill_name(name)
    return sorted(set(names))
