"""`claw coordinator start`: the coordinator process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.context import command_config, start_tracing
from cli.options import ConfigFlag, LogJsonFlag, MetricsPortFlag
from cli.runner import run_service, set_process_title
from common.log import configure_logging

group = typer.Typer(help="The coordinator process.", no_args_is_help=True)


@group.command("start")
def coordinator_start(
    ctx: typer.Context,
    config: ConfigFlag = None,
    db: Annotated[Path | None, typer.Option(help="SQLite state database.", show_default=".claw/claw.db")] = None,
    metrics_port: MetricsPortFlag = None,
    check_db: Annotated[
        bool,
        typer.Option(
            "--check-db",
            help="Run SQLite's full integrity check on the state database before serving (default: the quick one).",
        ),
    ] = False,
    replicate: Annotated[
        bool,
        typer.Option(
            "--replicate",
            help="Replicate to standbys (coordinator.replication): active if no coordinator is, else a standby "
            "that takes over when the active one's lease lapses.",
        ),
    ] = False,
    json_out: LogJsonFlag = False,
) -> None:
    """Run the coordinator until SIGINT/SIGTERM (with --replicate: or stand by for the active one)."""
    from coordinator.standby.runner import run_coordinator

    cfg = command_config(
        ctx,
        config,
        coordinator={
            "db_path": None if db is None else str(db),
            "metrics_port": metrics_port,
            "db_check": "full" if check_db else None,
            "replication": True if replicate else None,
        },
        log={"format": "json" if json_out else None},
    )
    configure_logging(cfg.log, process="coordinator")
    set_process_title("claw coordinator")
    start_tracing(cfg, "claw-coordinator")

    async def serve(stop: Any) -> None:
        await run_coordinator(cfg, stop)

    run_service(serve)


def register(app: typer.Typer) -> None:
    """Add `claw coordinator ...`."""
    app.add_typer(group, name="coordinator")
