"""`claw gateway start | key create | key revoke | key list`: the HTTP gateway and its API keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.context import client_config, command_config, connect, start_tracing
from cli.options import ConfigFlag, JsonFlag, LogJsonFlag
from cli.output import emit_json, emit_table, fmt_time
from cli.runner import fail, run_async, run_service, set_process_title
from common.errors import ClawError
from common.log import configure_logging

group = typer.Typer(help="The HTTP gateway: REST API, live events and the web dashboard.", no_args_is_help=True)
keys_group = typer.Typer(help="API keys of the gateway (stored hashed in NATS).", no_args_is_help=True)
group.add_typer(keys_group, name="key")


@group.command("start")
def gateway_start(
    ctx: typer.Context,
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on (port 0: a free one).")] = "127.0.0.1:8080",
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="An origin allowed to call the API from a browser.")
    ] = None,
    url_file: Annotated[Path | None, typer.Option(help="Write the gateway's URL here once it listens.")] = None,
    secure_cookies: Annotated[bool, typer.Option(help="Mark session cookies Secure (behind TLS).")] = False,
    config: ConfigFlag = None,
    json_out: LogJsonFlag = False,
) -> None:
    """Run the HTTP gateway until SIGINT/SIGTERM."""
    from gateway.server import GatewayServer, tune_garbage_collector
    from gateway.settings import GatewaySettings, parse_listen

    cfg = command_config(ctx, config, log={"format": "json" if json_out else None})
    try:
        host, port = parse_listen(listen)
    except ClawError as exc:
        fail(str(exc), kind="usage")
    settings = GatewaySettings(
        host=host,
        port=port,
        cors_origins=list(cors_origin or []),
        url_file=None if url_file is None else str(url_file),
        secure_cookies=secure_cookies,
    )
    configure_logging(cfg.log, process="gateway")
    set_process_title("claw gateway")
    start_tracing(cfg, "claw-gateway")

    async def serve(stop: Any) -> None:
        server = await GatewayServer.start(cfg, settings)
        tune_garbage_collector()  # after start-up: what it made is frozen
        await server.run(stop)

    run_service(serve)


@keys_group.command("create")
def key_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Who the key stands for (recorded as the actor).")],
    roles: Annotated[str, typer.Option(help="Comma-separated: admin, operator, approver, submitter, viewer.")],
    tenant: Annotated[
        str | None, typer.Option(help="A tenant's key: it submits for, sees and touches only this tenant's tasks.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Create an API key; it is printed once and stored only hashed."""
    from coordinator.tenants.identity import check_tenant_name
    from gateway.auth import parse_roles
    from gateway.server import open_key_store

    try:
        parsed = parse_roles(roles)
        if tenant is not None:
            check_tenant_name(tenant)
    except ClawError as exc:
        fail(str(exc), kind="usage")
    cfg = client_config(ctx)

    async def main() -> None:
        async with await connect(cfg) as client:
            record, key = await (await open_key_store(client.conn, cfg)).create(name, parsed, tenant)
        if json_out:
            emit_json({"name": record.name, "roles": record.roles, "key_id": record.key_id, "key": key,
                       "tenant": record.tenant})  # fmt: skip
            return
        of = f", tenant {record.tenant}" if record.tenant else ""
        print(f"API key for {record.name} ({', '.join(record.roles)}{of}):\n  {key}")
        print("Shown once: keep it. Use it as 'Authorization: Bearer <key>' or log in to the dashboard with it.")

    run_async(main())


@keys_group.command("revoke")
def key_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The name the key was created with.")],
    json_out: JsonFlag = False,
) -> None:
    """Revoke the keys of a name (every gateway refuses them within seconds)."""
    from gateway.server import open_key_store

    cfg = client_config(ctx)

    async def main() -> None:
        async with await connect(cfg) as client:
            count = await (await open_key_store(client.conn, cfg)).revoke(name)
        if not count:
            fail(f"no API key is named {name!r}; `claw gateway key list` shows them", kind="not_found")
        if json_out:
            emit_json({"name": name, "revoked": count})
        else:
            print(f"revoked {count} key(s) of {name}")

    run_async(main())


@keys_group.command("list")
def key_list(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """The API keys (names, roles, ids; never the secrets)."""
    from gateway.server import open_key_store

    cfg = client_config(ctx)

    async def main() -> None:
        async with await connect(cfg) as client:
            records = await (await open_key_store(client.conn, cfg)).all_keys()
        if json_out:
            emit_json([{"name": r.name, "roles": r.roles, "key_id": r.key_id, "created_at": r.created_at,
                        "tenant": r.tenant} for r in records])  # fmt: skip
            return
        rows = [(r.name, ",".join(r.roles), r.tenant or "(all)", r.key_id, fmt_time(r.created_at)) for r in records]
        header = ("NAME", "ROLES", "TENANT", "KEY ID", "CREATED")
        emit_table(header, rows, empty="(no API keys: claw gateway key create)")

    run_async(main())


def register(app: typer.Typer) -> None:
    """Add `claw gateway ...`."""
    app.add_typer(group, name="gateway")
