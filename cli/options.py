"""Options that several commands share, declared once so they read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AllFlag = Annotated[bool, typer.Option("--all", help="Every item, however many (fetched page by page).")]
ConfigFlag = Annotated[Path | None, typer.Option("--config", help="YAML config file (also $CLAW_CONFIG).")]
MetricsPortFlag = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve Prometheus metrics at :PORT/metrics (0: a free port).",
        min=0,
        max=65535,
        show_default="off",
    ),
]
# Long-running processes print log lines, not answers: --json makes them JSON lines even on a terminal.
LogJsonFlag = Annotated[
    bool, typer.Option("--json", help="Log JSON lines, also on a terminal (like log.format: json).")
]
# JetStream's fsync interval for the embedded nats-server (`claw up`, `claw nats start`).
SyncIntervalFlag = Annotated[
    str | None,
    typer.Option(
        "--sync-interval",
        metavar="always|DURATION",
        help="How often nats-server fsyncs its store: 'always' (each write before its ack: survives an OS "
        "crash or power loss, at a throughput cost) or a duration such as 10s (jetstream.sync_interval).",
        show_default="jetstream.sync_interval, else nats-server's 2m",
    ),
]


def sync_interval_or_config(flag: str | None) -> str | None:
    """The sync interval to start nats-server with: the flag's (checked), else jetstream.sync_interval."""
    from cli.runner import fail
    from common.config import load_config
    from common.errors import ClawError
    from communication.nats_server import check_sync_interval

    try:
        return check_sync_interval(flag) if flag is not None else load_config().jetstream.sync_interval
    except ClawError as exc:
        fail(str(exc).replace("sync interval", "--sync-interval", 1) if flag is not None else str(exc), kind="config")
