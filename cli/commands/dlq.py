"""`claw dlq list|replay|purge`: the dead-letter queue."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from cli.context import client_config, query
from cli.inputs import parse_duration
from cli.listing import run_listing
from cli.options import AllFlag, JsonFlag
from cli.output import emit_table, fmt_time, shorten
from cli.runner import fail
from cli.task_text import render_action
from common.api import TaskActionReply
from common.errors import ClawError
from common.models import DeadLetterView

group = typer.Typer(help="The dead-letter queue.", no_args_is_help=True)


@group.command("list")
def dlq_list(
    ctx: typer.Context,
    skill: Annotated[str | None, typer.Option(help="Only dead letters of this skill.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    all_: AllFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Dead letters (one per dead task, with every series' attempts), and poison messages."""
    run_listing(
        client_config(ctx),
        lambda client, cursor, n: client.dlq_page(skill=skill, limit=n, cursor=cursor),
        render_dead_letters,
        limit=limit,
        all_=all_,
        json_out=json_out,
        noun="dead letters",
    )


@group.command("replay")
def dlq_replay(
    ctx: typer.Context,
    task_id: Annotated[str | None, typer.Argument(help="The dead task to replay.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead task in the DLQ.")] = False,
    skill: Annotated[str | None, typer.Option(help="With --all: only this skill.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Run dead tasks again as new attempt series (replaying twice changes nothing)."""
    if all_ == (task_id is not None):
        fail("name a task id to replay, or pass --all", kind="usage")
    query(
        ctx,
        lambda client: client.dlq_replay(task_id, all=all_, skill=skill, by=getpass.getuser()),
        render_replays,
        json_out,
    )


@group.command("purge")
def dlq_purge(
    ctx: typer.Context,
    skill: Annotated[str | None, typer.Option(help="Only dead letters of this skill.")] = None,
    older_than: Annotated[
        str | None, typer.Option(metavar="<duration>", help="Only older ones, e.g. 30s, 15m, 12h, 7d.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Delete dead letters (their tasks stay in the database, `dead`)."""
    try:
        older_than_s = None if older_than is None else parse_duration(older_than)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    query(
        ctx,
        lambda client: client.dlq_purge(skill=skill, older_than_s=older_than_s),
        lambda purged: print(f"purged {purged} dead letter(s)"),
        json_out,
    )


def render_dead_letters(views: list[DeadLetterView]) -> None:
    """`claw dlq list`."""
    emit_table(
        ["SEQ", "DEAD AT", "KIND", "SKILL", "TASK", "ATTEMPTS", "REASON"],
        [
            (
                v.seq,
                fmt_time(v.letter.dead_at),
                v.letter.kind,
                v.letter.skill,
                # A poison letter names no task: the node that reported it instead.
                v.letter.task_id or (f"(from node {v.letter.reported_by})" if v.letter.reported_by else None),
                _letter_attempts(v),
                shorten(v.letter.reason, 70),
            )
            for v in views
        ],
        empty="the dead-letter queue is empty",
    )


def _letter_attempts(view: DeadLetterView) -> str | None:
    count = len(view.letter.attempts)
    if not count:
        return None
    return f"{count} (series {view.letter.series})" if view.letter.series > 1 else str(count)


def render_replays(replies: list[TaskActionReply]) -> None:
    """`claw dlq replay`."""
    if not replies:
        print("nothing to replay")
    for reply in replies:
        render_action(reply, "replayed")


def register(app: typer.Typer) -> None:
    """Add `claw dlq ...`."""
    app.add_typer(group, name="dlq")
