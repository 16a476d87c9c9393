"""`claw up`: a whole local cluster in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.options import MetricsPortFlag, SyncIntervalFlag, sync_interval_or_config
from cli.runner import fail, run_service, set_process_title
from common.config import LogSettings
from common.errors import ClawError
from common.log import configure_logging


def up(
    workers: Annotated[int, typer.Option(help="Worker processes to start.")] = 2,
    data_dir: Annotated[Path, typer.Option(help="Where the store, database and logs live.")] = Path(".claw"),
    nats_port: Annotated[int, typer.Option(help="NATS client port.")] = 4222,
    monitor_port: Annotated[int, typer.Option(help="NATS monitoring port.")] = 8222,
    concurrency: Annotated[int, typer.Option(help="Concurrency of each worker.")] = 8,
    metrics_port: MetricsPortFlag = None,
    gateway: Annotated[
        str, typer.Option(help="HOST:PORT of the HTTP gateway and dashboard (port 0: a free one; 'off': none).")
    ] = "127.0.0.1:8080",
    json_out: Annotated[
        bool, typer.Option("--json", help="Print where the cluster listens as JSON, and log JSON lines.")
    ] = False,
    nats_nodes: Annotated[
        int,
        typer.Option(
            help="nats-servers to run: 1, or 3 or 5 for a NATS cluster on this machine with every stream on "
            "each server (one may fail; docs/RUNBOOK.md)."
        ),
    ] = 1,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth", help="Run NATS without authentication: whoever reaches it owns the cluster (not advised)."
        ),
    ] = False,
    sync_interval: SyncIntervalFlag = None,
) -> None:
    """Run a whole local cluster: embedded nats-server, a coordinator, N workers and the HTTP gateway
    with its dashboard, until Ctrl-C."""
    from cli.local_cluster import LocalCluster

    if workers < 0:
        fail("--workers must be 0 or more", kind="usage")
    if nats_nodes not in (1, 3, 5):
        fail(
            f"--nats-nodes {nats_nodes}: use 1, 3 or 5 (JetStream needs a majority of the servers: "
            "2 fail with either one down, 4 no better than 3)",
            kind="usage",
        )
    if gateway != "off":
        from gateway.settings import parse_listen

        try:
            parse_listen(gateway)
        except ClawError as exc:
            fail(f"{exc}, or off".replace("--listen", "--gateway"), kind="usage")
    sync = sync_interval_or_config(sync_interval)
    set_process_title("claw up")
    configure_logging(LogSettings(level="warning", format="json" if json_out else "console"), process="up")
    cluster = LocalCluster(
        data_dir=data_dir,
        workers=workers,
        nats_port=nats_port,
        monitor_port=monitor_port,
        concurrency=concurrency,
        metrics_port=metrics_port,
        gateway=None if gateway == "off" else gateway,
        json_out=json_out,
        auth=not no_auth,
        nats_nodes=nats_nodes,
        sync_interval=sync,
    )
    run_service(cluster.serve)


def register(app: typer.Typer) -> None:
    """Add `claw up`."""
    app.command()(up)
