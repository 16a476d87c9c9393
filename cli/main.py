"""`claw`: the command line that starts every process and operates the cluster.

Form: `claw [--nats URL] COMMAND [ARGS] [--json]`. Commands print tables for people and JSON with
`--json`; they exit 0 on success and non-zero with one `error:` line on stderr otherwise.

This module is only the root: the global options and the list of command groups. Each group lives
in a module of `cli.commands` with its renderers; adding one is a new module and a line in GROUPS.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.commands import (
    approvals,
    artifacts,
    audit,
    bench,
    coordinator,
    dlq,
    guard,
    nats,
    node,
    nodes,
    quarantine,
    skills,
    status,
    submit,
    task,
    up,
    worker,
)
from cli.context import Globals
from cli.runner import protect_output

app = typer.Typer(
    name="claw",
    help="OpenClaw Cluster: run and operate a distributed task cluster on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# In the order `claw --help` lists them (typer lists single commands before groups).
GROUPS = (
    up,
    submit,
    nodes,
    status,
    approvals,
    bench,
    nats,
    coordinator,
    worker,
    task,
    dlq,
    skills,
    guard,
    audit,
    artifacts,
    node,
    quarantine,
)
for group in GROUPS:
    group.register(app)


@app.callback()
def root(
    ctx: typer.Context,
    nats_url: Annotated[
        str | None,
        typer.Option("--nats", envvar="CLAW_NATS_URL", help="NATS URL (default nats://127.0.0.1:4222)."),
    ] = None,
) -> None:
    """OpenClaw Cluster."""
    ctx.obj = Globals(nats_url=nats_url)


def run() -> None:
    """Console-script entry point."""
    protect_output()
    app()
