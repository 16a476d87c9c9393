"""What every command gets from the root: the global options, its config, and a connected client.

`query` is the shape of most operating commands: one read-only (or one-shot) API call whose answer
is printed as a table, or as JSON with `--json`.
"""

from __future__ import annotations

import atexit
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import typer

from cli.output import emit_json
from cli.runner import fail, run_async
from common.config import ClawConfig, LogSettings, load_config
from common.errors import ClawError
from common.log import configure_logging
from common.tracing import setup_tracing
from communication.api_client import ClawClient

CLIENT_NAME = "claw-cli"


@dataclass
class Globals:
    """Options given before the command."""

    nats_url: str | None = None
    creds: str | None = None


def command_config(ctx: typer.Context, path: Path | None = None, **sections: dict[str, Any]) -> ClawConfig:
    """The config of this command: defaults, `path` (or $CLAW_CONFIG), `CLAW_*`, `--nats`, `sections`."""
    globals_: Globals = ctx.obj or Globals()
    overrides = {"nats": {"url": globals_.nats_url, "creds_file": globals_.creds}, **sections}
    try:
        return load_config(path, overrides=overrides)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)


def client_config(ctx: typer.Context) -> ClawConfig:
    """The config of a command that talks to the cluster as a client (quiet logs, traced)."""
    config = with_local_admin(command_config(ctx))
    # A client prints one error line, not the connection warnings behind it.
    configure_logging(LogSettings(level="error", format="console"), process="claw-cli")
    start_tracing(config, "claw-cli")
    return config


# Where `claw up` (with its default data dir) leaves the local admin's credentials.
LOCAL_ADMIN_CREDS = Path(".claw/auth/admin.creds")


def with_local_admin(config: ClawConfig) -> ClawConfig:
    """A client without credentials, run where `claw up` keeps its data, uses the local admin's."""
    if config.nats.creds_file or not LOCAL_ADMIN_CREDS.is_file():
        return config
    nats = msgspec.structs.replace(config.nats, creds_file=str(LOCAL_ADMIN_CREDS))
    return msgspec.structs.replace(config, nats=nats)


def start_tracing(config: ClawConfig, service: str) -> None:
    """Install this process's tracer; spans still buffered are exported when it exits."""
    try:
        handle = setup_tracing(service, config.tracing)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    atexit.register(handle.shutdown)


async def connect(config: ClawConfig) -> ClawClient:
    """A client of the cluster `config` points at (use as `async with await connect(cfg) as client`)."""
    return await ClawClient.connect(config.nats, name=CLIENT_NAME)


def query(
    ctx: typer.Context,
    fetch: Callable[[ClawClient], Awaitable[Any]],
    render: Callable[[Any], None],
    json_out: bool,
) -> None:
    """Run one API call and print its answer as a table (`render`) or JSON."""
    cfg = client_config(ctx)

    async def main() -> None:
        async with await connect(cfg) as client:
            value = await fetch(client)
        if json_out:
            emit_json(value)
        else:
            render(value)

    run_async(main())
