"""Issuing and revoking credentials on the machine that runs nats-server (`claw creds`, `claw up`,
`claw nats start`).

Issuing makes a fresh NKey pair, records the identity (name, roles, public key, node id) in the
registry, writes the credentials file (the seed; mode 0600) for its holder, regenerates the server's
permissions and has a running server reload them: no restart. Revoking removes the identity and
reloads: the server disconnects its connections and refuses new ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nkeys

from common.config import TlsSettings
from common.errors import CredentialsError
from common.identity import BusRole, check_identity, read_credentials, render_credentials, write_private
from common.verbs import Role
from communication.auth_config import load_server_tls, reload_server, save_server_tls, write_server_config
from communication.auth_registry import IdentityRecord, IdentityRegistry, new_record, parse_roles

# Everything one person running the whole cluster does, as `claw up`'s local admin.
LOCAL_ADMIN_ROLES = [r.value for r in Role if r != Role.WORKER]
ADMIN_CREDS = "admin.creds"
COORDINATOR_CREDS = "coordinator.creds"
GATEWAY_CREDS = "gateway.creds"


@dataclass(frozen=True)
class Issued:
    """Credentials just issued: the registry entry, where the file is, and whether a server reloaded."""

    record: IdentityRecord
    path: Path
    reloaded: bool


def issue(
    auth_dir: Path,
    *,
    name: str,
    roles: list[str],
    out: Path,
    prefix: str,
    node_id: str | None = None,
    tls: TlsSettings | None = None,
    reload: bool = True,
    tenant: str | None = None,
    skills: list[str] | None = None,
) -> Issued:
    """Issue credentials for a new identity and write them to `out` (0600); `tenant` binds its submits
    to that tenant; `skills` binds a worker to those skills' task consumers (None: every skill)."""
    check_identity(name)
    if tenant is not None:
        from coordinator.tenants.identity import check_tenant_name

        check_tenant_name(tenant)
    roles = parse_roles(roles)
    if BusRole.WORKER.value in roles:
        node_id = check_identity(node_id or name)
        if node_id != name:
            # The coordinator takes a worker's node from its identity (flow control's permits).
            raise CredentialsError(f"a worker's name is its node id: give --node-id {node_id} without --name {name}")
    elif node_id:
        raise CredentialsError("--node-id is for the worker role only")
    if skills is not None and BusRole.WORKER.value not in roles:
        raise CredentialsError("--skills is for the worker role only")
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public_key = nkeys.from_seed(bytearray(seed)).public_key.decode()
    registry = IdentityRegistry.load(auth_dir)
    record = new_record(name, roles, public_key, node_id, prefix, tenant, skills)
    registry.add(record)
    if out.exists():
        raise CredentialsError(f"{out} exists; choose another -o file (credentials are never overwritten)")
    write_private(out, render_credentials(identity=name, roles=roles, seed=seed.decode(), node_id=node_id,
                                           skills=skills))  # fmt: skip
    registry.save()
    return Issued(record, out, _apply(auth_dir, registry, tls, reload))


def revoke(auth_dir: Path, name: str, *, tls: TlsSettings | None = None) -> tuple[IdentityRecord, bool]:
    """Remove an identity; a running server reloads and drops its connections."""
    registry = IdentityRegistry.load(auth_dir)
    record = registry.remove(name)
    registry.save()
    return record, _apply(auth_dir, registry, tls, True)


def _apply(auth_dir: Path, registry: IdentityRegistry, tls: TlsSettings | None, reload: bool) -> bool:
    write_server_config(auth_dir, registry, tls if tls is not None else load_server_tls(auth_dir))
    return reload and reload_server(auth_dir)


def ensure(
    auth_dir: Path, *, name: str, roles: list[str], prefix: str, node_id: str | None = None, file: str | None = None
) -> Path:
    """The credentials file `<auth dir>/<file or name.creds>` for `name`, issued unless it exists and
    is still registered (for `claw up` and `claw nats start`: idempotent across restarts)."""
    path = auth_dir / (file or f"{name}.creds")
    registry = IdentityRegistry.load(auth_dir)
    record = registry.get(name)
    if record is not None and path.exists():
        try:
            seed = bytearray(read_credentials(path).seed.encode())
            if nkeys.from_seed(seed).public_key.decode() == record.public_key:
                return path
        except (CredentialsError, nkeys.NkeysError):
            pass
    if record is not None:  # its file is gone or not its own: issue it again
        registry.remove(name)
        registry.save()
    path.unlink(missing_ok=True)
    return issue(auth_dir, name=name, roles=roles, out=path, prefix=prefix, node_id=node_id, reload=False).path


def prepare_server(auth_dir: Path, tls: TlsSettings | None = None) -> Path:
    """The server config of `auth_dir`, (re)written from the registry before the server starts."""
    auth_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(auth_dir, 0o700)
    save_server_tls(auth_dir, tls)
    return write_server_config(auth_dir, IdentityRegistry.load(auth_dir), tls)
