"""`claw creds create|list|revoke|rotate`: credentials for NATS and signed tokens for HTTP, issued on
the machine that runs nats-server.

    claw creds create --role worker --node-id w7 -o w7.creds          # a worker on another machine
    claw creds create --role worker --node-id w8 --skills echo,text.upper -o w8.creds  # only these skills' tasks
    claw creds create --role approver --name alice -o alice.creds     # a person (several --role allowed)
    claw creds create alice --role approver,submitter --http --ttl 30d -o alice.token   # for the gateway
    claw creds list
    claw creds revoke alice                                          # cut off at once, no restart
    claw creds rotate --http                                         # a new token signing key

HTTP tokens (communication/http_tokens.py) are JWTs signed with the cluster's Ed25519 key, kept in the auth
folder (0600); their records and the public key live in the gateway's keys bucket, so the commands
that touch them connect to the cluster (as the local admin where `claw up` ran, else `--creds`).

The registry and the server's permissions live in the auth folder (`--auth-dir`, default
`auth.dir`, else `.claw/auth`, where `claw up` and `claw nats start` keep them). A running server is
told to reload, so new credentials work and revoked ones stop working without a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.context import client_config, command_config, connect
from cli.output import emit_json, emit_table
from cli.runner import fail, run_async, run_loop, warn
from common.errors import ClawError, CredentialsError
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
    role: Annotated[
        list[str], typer.Option("--role", help=f"A role ({', '.join(ROLE_NAMES)}); repeat or comma-separate.")
    ],
    identity_arg: Annotated[str | None, typer.Argument(metavar="[NAME]", help="The identity's name.")] = None,
    out: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write the credentials file or token (0600)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="The identity's name (a worker's defaults to its node id).")] = None,
    http: Annotated[
        bool, typer.Option("--http", help="Issue a signed bearer token for the HTTP gateway, not NATS credentials.")
    ] = False,
    ttl: Annotated[str, typer.Option(help="How long an --http token is valid (30d, 12h, 90m).")] = "30d",
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
    """Issue credentials for a new identity (or, with --http, a token); the running server and gateways
    accept them at once."""
    from cli.credentials import issue
    from communication.auth_registry import parse_skill_set

    folder = auth_dir_of(ctx, auth_dir)
    if identity_arg and name and identity_arg != name:
        fail(f"two names given ({identity_arg} and --name {name}); give one", kind="usage")
    identity = identity_arg or name or node_id
    if http:
        if identity is None:
            fail("give the token's identity: claw creds create NAME --role ROLE --http", kind="usage")
        _create_token(ctx, folder, identity, role, tenant, ttl, out, json_out)
        return
    config = command_config(ctx)
    if identity is None:
        fail("give the identity a --name (or, for a worker, a --node-id)", kind="usage")
    if out is None:
        fail("give the credentials file to write: -o FILE (NATS credentials are a file, mode 0600)", kind="usage")
    try:
        skill_set = None if skills is None else parse_skill_set(skills)
        roles = [r.strip() for part in role for r in part.split(",") if r.strip()]
        issued = issue(folder, name=identity, roles=roles, out=out, prefix=config.nats.prefix, node_id=node_id,
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
    http: Annotated[bool, typer.Option("--http/--no-http", help="Also list HTTP tokens (asks the cluster).")] = True,
) -> None:
    """Every identity that may connect, with its roles, and every HTTP token in force."""
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
    tokens, unreachable = _http_tokens(ctx) if http else ([], None)
    if json_out:
        emit_json([{"name": r.name, "kind": "nats", "roles": r.roles, "node_id": r.node_id, "prefix": r.prefix,
                    "tenant": r.tenant, "skills": r.skills, "public_key": r.public_key, "created_at": r.created_at}
                   for r in records]
                  + [{"name": t.name, "kind": "http", "roles": [role.value for role in t.roles], "node_id": None,
                      "tenant": t.tenant,
                      "token_id": t.token_id, "created_at": t.issued_at, "expires_at": t.expires_at}
                     for t in tokens])  # fmt: skip
    elif not records and not tokens:
        print("no credentials issued; `claw creds create --role ROLE ...` issues some")
    else:
        rows = [
            [r.name, "nats", ",".join(r.roles), r.node_id or "-", _skills(r.skills, r.node_id), r.tenant or "-",
             r.public_key[:12] + "…", _when(r.created_at), "-"]
            for r in records
        ] + [
            [t.name, "http", ",".join(t.roles), "-", "-", t.tenant or "-", t.token_id[:12] + "…", _when(t.issued_at),
             _when(t.expires_at)]
            for t in tokens
        ]  # fmt: skip
        emit_table(["NAME", "KIND", "ROLES", "NODE", "SKILLS", "TENANT", "KEY", "ISSUED", "EXPIRES"], rows)
    if unreachable:
        warn(f"HTTP tokens not listed: {unreachable} (pass --no-http to list NATS credentials only)")


@group.command("revoke")
def creds_revoke(
    ctx: typer.Context,
    name: str,
    auth_dir: AuthDirFlag = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the revoked identity as JSON.")] = False,
) -> None:
    """Revoke an identity's credentials and HTTP tokens: its connections are dropped, it cannot connect
    again, and every gateway refuses its tokens within seconds."""
    from cli.credentials import revoke

    folder = auth_dir_of(ctx, auth_dir)
    registered = folder.is_dir() and IdentityRegistry.load(folder).get(name) is not None
    reloaded = False
    if registered:
        try:
            _, reloaded = revoke(folder, name)
        except ClawError as exc:
            fail(str(exc), kind=exc.code)
    tokens = _revoke_tokens(ctx, name, quiet=registered)
    if not registered and not tokens:
        fail(f"no credentials or HTTP tokens are named {name!r}; `claw creds list` shows them", kind="not_found")
    if json_out:
        emit_json({"name": name, "revoked": True, "server_reloaded": reloaded, "http_tokens": tokens})
        return
    if registered:
        where = "the running nats-server dropped it" if reloaded else "the server refuses it when it starts"
        print(f"{name} revoked; {where}")
    if tokens:
        print(f"{tokens} HTTP token(s) of {name} revoked; every gateway refuses them within seconds")


@group.command("rotate")
def creds_rotate(
    ctx: typer.Context,
    http: Annotated[bool, typer.Option("--http", help="Rotate the HTTP token signing key.")] = False,
    auth_dir: AuthDirFlag = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A new signing key for HTTP tokens: every token issued so far stops working at once."""
    from communication.http_tokens import public_key_of, signing_key
    from gateway.server import open_key_store

    if not http:
        fail("say what to rotate: claw creds rotate --http (NATS credentials: revoke and create again)", kind="usage")
    folder = auth_dir_of(ctx, auth_dir)
    cfg = client_config(ctx)

    async def main() -> None:
        async with await connect(cfg) as client:
            store = await open_key_store(client.conn, cfg)
            # The new key is published before the old tokens' records go: none is accepted after this.
            await store.publish_public_key(public_key_of(signing_key(folder, fresh=True)), replace=True)
            dropped = await store.revoke_tokens()
        if json_out:
            emit_json({"rotated": True, "http_tokens_revoked": dropped})
        else:
            print(f"new HTTP token signing key in {folder}; {dropped} token(s) revoked: issue new ones")

    run_async(main())


def _create_token(
    ctx: typer.Context,
    folder: Path,
    name: str,
    role: list[str],
    tenant: str | None,
    ttl: str,
    out: Path | None,
    json_out: bool,
) -> None:
    """`claw creds create NAME --role ... --http`: sign a token, record it, print or write it."""
    from common.identity import write_private
    from communication.http_tokens import new_record, parse_ttl, public_key_of, sign, signing_key
    from coordinator.tenants.identity import check_tenant_name
    from gateway.auth import check_name, parse_roles
    from gateway.server import open_key_store

    try:
        check_name(name)
        roles = parse_roles(",".join(role))
        if tenant is not None:
            check_tenant_name(tenant)
        ttl_s = parse_ttl(ttl)
        if out is not None and out.exists():
            raise CredentialsError(f"{out} exists; choose another -o file (credentials are never overwritten)")
        private = signing_key(folder)
    except ClawError as exc:
        fail(str(exc), kind="usage" if exc.code in {"invalid_input", "error"} else exc.code)
    cfg = client_config(ctx)
    public = public_key_of(private)

    async def main() -> None:
        async with await connect(cfg) as client:
            store = await open_key_store(client.conn, cfg)
            await store.publish_public_key(public)
            record = new_record(name, roles, tenant, ttl_s, public.kid)
            await store.add_token(record)
        token = sign(private, record, cfg.nats.prefix)
        if out is not None:
            write_private(out, token + "\n")
        if json_out:
            emit_json({"name": record.name, "kind": "http", "roles": [r.value for r in record.roles],
                       "tenant": record.tenant, "token_id": record.token_id, "expires_at": record.expires_at,
                       "file": None if out is None else str(out),
                       "token": None if out is not None else token})  # fmt: skip
            return
        of = f", tenant {record.tenant}" if record.tenant else ""
        expires = _when(record.expires_at)
        if out is not None:
            print(f"HTTP token for {record.name} ({', '.join(record.roles)}{of}) -> {out} (0600); expires {expires}")
        else:
            print(f"HTTP token for {record.name} ({', '.join(record.roles)}{of}), expires {expires}:\n  {token}")
        print("use: 'Authorization: Bearer <token>' or log in to the dashboard with it; keep it secret")

    run_async(main())


def _http_tokens(ctx: typer.Context) -> tuple[list[Any], str | None]:
    """The HTTP tokens in force, or why they could not be read."""
    from gateway.server import open_key_store

    cfg = client_config(ctx)

    async def main() -> list[Any]:
        async with await connect(cfg) as client:
            return await (await open_key_store(client.conn, cfg)).all_tokens()

    try:
        return run_loop(main()), None
    except ClawError as exc:
        return [], str(exc)


def _revoke_tokens(ctx: typer.Context, name: str, *, quiet: bool) -> int:
    """Delete `name`'s HTTP token records; 0 with a warning (when `quiet`) if the cluster is unreachable."""
    from gateway.server import open_key_store

    cfg = client_config(ctx)

    async def main() -> int:
        async with await connect(cfg) as client:
            return await (await open_key_store(client.conn, cfg)).revoke_tokens(name)

    try:
        return run_loop(main())
    except ClawError as exc:
        if not quiet:
            fail(str(exc), kind=exc.code)
        warn(f"HTTP tokens of {name} not revoked: {exc} (run again when the cluster is up)")
        return 0


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
