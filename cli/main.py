"""`claw`: the command line that starts every process and operates the cluster.

Form: `claw [--nats URL] COMMAND [ARGS] [--json]`. Commands print tables for people and JSON with
`--json`; they exit 0 on success and non-zero with one `error:` line on stderr otherwise (with
`--json`, one `{"error": ..., "code": ...}` object instead).

This module is only the root: the global options and the list of command groups. Each group lives
in a module of `cli.commands` with its renderers; adding one is a new module and a line in GROUPS.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cli.commands import (
    approvals,
    artifacts,
    audit,
    backup,
    bench,
    coordinator,
    creds,
    dlq,
    gateway,
    guard,
    limits,
    nats,
    node,
    nodes,
    quarantine,
    schedules,
    skills,
    status,
    submit,
    task,
    up,
    worker,
    workflow,
)
from cli.context import Globals
from cli.help import polish
from cli.runner import EXIT_ERROR, EXIT_INTERRUPTED, protect_output, report_error, use_json_messages
from common import __version__

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
    workflow,
    schedules,
    backup,
    limits,
    gateway,
    creds,
)
for group in GROUPS:
    group.register(app)


def _print_version(value: bool) -> None:
    if value:
        print(f"claw {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    nats_url: Annotated[
        str | None,
        typer.Option(
            "--nats",
            envvar="CLAW_NATS_URL",
            metavar="<url>",
            help="NATS URL; several comma-separated.",
            show_default="nats://127.0.0.1:4222",
        ),
    ] = None,
    creds: Annotated[
        str | None,
        typer.Option(
            "--creds",
            envvar="CLAW_CREDS",
            metavar="<file>",
            help="Credentials file (claw creds create); a client run where `claw up` ran finds its admin.creds.",
            show_default="none",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """OpenClaw Cluster."""
    ctx.obj = Globals(nats_url=nats_url, creds=creds)


def command() -> Any:
    """The `claw` command tree, its help polished (cli.help)."""
    built = typer.main.get_command(app)
    polish(built)
    return built


def run() -> None:
    """Console-script entry point."""
    protect_output()
    claw = command()
    args = sys.argv[1:]
    if "--json" not in args:
        claw(args, prog_name="claw")  # typer reports usage errors in its own panel
        return
    # With --json every error is one JSON object, usage errors included: run without typer's
    # standalone mode so they reach us instead of its panel.
    use_json_messages()
    try:
        code = claw.main(args, prog_name="claw", standalone_mode=False)
    except typer.TyperException as exc:
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        if getattr(exc, "option_name", None) == "--json" and ctx is not None and ctx.parent is None:
            # `claw --json status`: --json is each command's option, not claw's (NoSuchOption).
            message = "--json goes after the command, not before it: e.g. `claw status --json`"
        report_error(message, "usage")
        sys.exit(getattr(exc, "exit_code", EXIT_ERROR))
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
