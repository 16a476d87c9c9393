"""`claw quarantine list`: task events the coordinator set aside because it could not decode or fold them.

A typer sub-app of its own, registered in `cli/main.py`; it needs only the global `--nats` option.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.output import emit_json, emit_table, fmt_bytes, fmt_time, shorten
from cli.runner import fail, run_async
from common.config import ClawConfig, LogSettings, load_config
from common.errors import ClawError
from common.log import configure_logging
from common.models import QuarantinedEvent
from communication.api_client import ClawClient

quarantine_app = typer.Typer(
    help="Task events the coordinator could not decode or fold (set aside, acked, not applied).",
    no_args_is_help=True,
)


@quarantine_app.command("list")
def quarantine_list(
    ctx: typer.Context,
    task: Annotated[str | None, typer.Option("--task", help="Only the events of this task.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first (up to 500).", min=1, max=500)] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Quarantined events, newest first: when, on which subject, for which task, why, and their first bytes."""
    config = _client_config(ctx)

    async def main() -> list[QuarantinedEvent]:
        async with await ClawClient.connect(config.nats, name="claw-cli") as client:
            return await client.quarantine_list(task_id=task, limit=limit)

    events = run_async(main())
    if json_out:
        emit_json(events)
    else:
        render_quarantine(events)


def render_quarantine(events: list[QuarantinedEvent]) -> None:
    """One row per event; its bytes shown escaped (they may be anything)."""
    rows = [
        (e.id, fmt_time(e.at), e.task_id, e.kind, e.stream_seq, fmt_bytes(e.size), shorten(e.reason, 70),
         shorten(preview(e.data), 40))
        for e in events
    ]  # fmt: skip
    emit_table(
        ["ID", "AT", "TASK", "KIND", "SEQ", "SIZE", "REASON", "DATA"],
        rows,
        empty="the quarantine is empty",
    )


def preview(data: bytes) -> str:
    """Bytes as printable text: ASCII as is, anything else escaped (`\\xff`)."""
    return repr(data)[2:-1]


def _client_config(ctx: typer.Context) -> ClawConfig:
    """The config with the global `--nats` URL; a client logs only errors."""
    url = getattr(ctx.find_root().obj, "nats_url", None)
    try:
        config = load_config(None, overrides={"nats": {"url": url}})
    except ClawError as exc:
        fail(str(exc))
    configure_logging(LogSettings(level="error", format="console"), process="claw-cli")
    return config
