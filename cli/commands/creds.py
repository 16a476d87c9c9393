"""`claw creds create|list|revoke`: credentials for NATS, issued on the machine that runs nats-server.

    claw creds create --role worker --node-id w7 -o w7.creds          # a worker on another machine
    claw creds create --role worker --node-id w8 --skills echo,text.upper -o w8.creds  # only these skills' tasks
    claw creds create --role approver --name alice -o alice.creds     # a person (several --role allowed)
    claw creds list
    claw creds revoke alice                                          # cut off at once, no restart

The registry and the server's permissions live in the auth folder (`--auth-dir`, default
`auth.dir`, else `.claw/auth`, where `claw up` and `claw nats start` keep them). A running server is
told to reload, so new credentials work and revoked ones stop working without a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from cli.context import command_config
from cli.output import emit_json, emit_table
from cli.runner import fail
from common.errors import ClawError
from communication.auth_registry import ROLE_NAMES, IdentityRegistry

group = typer.Typer(help="Credentials for NATS: issue, list, revoke (docs/Security.md).", no_args_is_help=True)

DEFAULT_AUTH_DIR = Path(".claw/auth")
AuthDirFlag = Annotated[
    Path | None,
    typer.Option("--auth-dir", help="The auth folder of the cluster's nats-server.", show_default=".claw/auth"),
]


def auth_dir_of(ctx: typer.Context, given: Path | None) -> Path:
    """The auth folder: the option, else the config's auth.dir (CLAW_AUTH_DIR), else .claw/auth."""
    if given is not None:
        return given
    configured = command_config(ctx).auth.dir
    return Path(configured) if configured else DEFAULT_AUTH_DIR


@group.command("create")
def creds_create(
    ctx: typer.Context,
    role: Annotated[list[str], typer.Option("--role", help=f"A role ({', '.join(ROLE_NAMES)}); repeat for several.")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Where to write the credentials file (0600).")],
    name: Annotated[str | None, typer.Option(help="The identity's name (a worker's defaults to its node id).")] = None,
    node_id: Annotated[str | None, typer.Option(help="The node id a worker's credentials are bound to.")] = None,
    tenant: Annotated[
        str | None, typer.Option(help="The tenant its submits are for (a --tenant it names otherwise is refused).")
    ] = None,
    skills: Annotated[
        str | None,
        typer.Option(
            "--skills",
            help="A worker's skills (exact names, comma-separated): it pulls only their tasks (default: every skill).",
        ),
    ] = None,
    auth_dir: AuthDirFlag = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the new identity as JSON.")] = False,
) -> None:
    """Issue credentials for a new identity; the running server accepts them at once."""
    from cli.credentials import issue
    from communication.auth_registry import parse_skill_set

    folder = auth_dir_of(ctx, auth_dir)
    config = command_config(ctx)
    identity = name or node_id
    if identity is None:
        fail("give the identity a --name (or, for a worker, a --node-id)", kind="usage")
    try:
        skill_set = None if skills is None else parse_skill_set(skills)
        issued = issue(folder, name=identity, roles=role, out=out, prefix=config.nats.prefix, node_id=node_id,
                       tenant=tenant, skills=skill_set)  # fmt: skip
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    record = issued.record
    if json_out:
        emit_json({"name": record.name, "roles": record.roles, "node_id": record.node_id, "file": str(out),
                   "tenant": record.tenant, "skills": record.skills, "public_key": record.public_key,
                   "server_reloaded": issued.reloaded})  # fmt: skip
        return
    where = "the running nats-server reloaded" if issued.reloaded else "the server reads them when it starts"
    print(f"{record.name} ({', '.join(record.roles)}) -> {out} (mode 0600); {where}")
    if record.bus_role.value == "worker":
        pulls = "every skill (bind it with --skills)" if record.skills is None else ", ".join(record.skills)
        print(f"it may pull the tasks of: {pulls}")
    print(f"use: claw --creds {out} ... (or CLAW_CREDS={out}); keep the file secret")


@group.command("list")
def creds_list(
    ctx: typer.Context,
    auth_dir: AuthDirFlag = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every identity that may connect, with its roles."""
    folder = auth_dir_of(ctx, auth_dir)
    if not folder.is_dir():
        # Not "no credentials issued": run elsewhere than the folder holding .claw, that would mislead.
        fail(
            f"no credentials folder at {folder}: run from the folder holding .claw (where `claw up` ran), "
            "or pass --auth-dir (CLAW_AUTH_DIR)",
            kind="config",
        )
    try:
        records = IdentityRegistry.load(folder).all()
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    if json_out:
        emit_json([{"name": r.name, "roles": r.roles, "node_id": r.node_id, "prefix": r.prefix, "tenant": r.tenant,
                    "skills": r.skills,
                    "public_key": r.public_key, "created_at": r.created_at} for r in records])  # fmt: skip
        return
    if not records:
        print("no credentials issued; `claw creds create --role ROLE ...` issues some")
        return
    rows = [
        [r.name, ",".join(r.roles), r.node_id or "-", _skills(r.skills, r.node_id), r.tenant or "-", r.prefix,
         r.public_key[:12] + "…", _when(r.created_at)]
        for r in records
    ]  # fmt: skip
    emit_table(["NAME", "ROLES", "NODE", "SKILLS", "TENANT", "PREFIX", "KEY", "ISSUED"], rows)


@group.command("revoke")
def creds_revoke(
    ctx: typer.Context,
    name: str,
    auth_dir: AuthDirFlag = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the revoked identity as JSON.")] = False,
) -> None:
    """Revoke an identity's credentials: its connections are dropped and it cannot connect again."""
    from cli.credentials import revoke

    try:
        record, reloaded = revoke(auth_dir_of(ctx, auth_dir), name)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    if json_out:
        emit_json({"name": record.name, "revoked": True, "server_reloaded": reloaded})
        return
    where = "the running nats-server dropped it" if reloaded else "the server refuses it when it starts"
    print(f"{record.name} revoked; {where}")


def _skills(skills: list[str] | None, node_id: str | None) -> str:
    """A worker's skill set as listed: its names, `all` when unbound; `-` for other identities."""
    if node_id is None:
        return "-"
    return "all" if skills is None else ",".join(skills)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M") if at else "-"


def register(app: typer.Typer) -> None:
    """Add `claw creds ...`."""
    app.add_typer(group, name="creds")
