"""`claw quarantine list`: task events the coordinator set aside because it could not decode or fold them."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.context import query
from cli.options import JsonFlag
from cli.output import emit_table, fmt_bytes, fmt_time, shorten
from common.models import QuarantinedEvent

group = typer.Typer(
    help="Task events the coordinator could not decode or fold (set aside, acked, not applied).",
    no_args_is_help=True,
)


@group.command("list")
def quarantine_list(
    ctx: typer.Context,
    task: Annotated[str | None, typer.Option("--task", help="Only the events of this task.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first (up to 500).", min=1, max=500)] = 50,
    json_out: JsonFlag = False,
) -> None:
    """Quarantined events, newest first: when, on which subject, for which task, why, and their first bytes."""
    query(ctx, lambda client: client.quarantine_list(task_id=task, limit=limit), render_quarantine, json_out)


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


def register(app: typer.Typer) -> None:
    """Add `claw quarantine list`."""
    app.add_typer(group, name="quarantine")
