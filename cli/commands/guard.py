"""`claw guard check`: which guard rule a task would meet."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.context import query
from cli.inputs import read_inputs
from cli.options import JsonFlag
from cli.runner import fail
from common.api import GuardCheckReply
from common.errors import ClawError

group = typer.Typer(help="The guard policy.", no_args_is_help=True)


@group.command("check")
def guard_check(
    ctx: typer.Context,
    skill: str,
    input: Annotated[str, typer.Option("--input", "-i", metavar="<json>", help="The input, a JSON object.")] = "{}",
    json_out: JsonFlag = False,
) -> None:
    """Which guard rule would apply to such a task, and why (nothing is submitted)."""
    try:
        [raw] = read_inputs(input, None)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    query(ctx, lambda client: client.guard_check(skill, raw, submitter=None), render_guard_check, json_out)


def render_guard_check(reply: GuardCheckReply) -> None:
    """`claw guard check`."""
    d = reply.decision
    action = d.action + (f" ({d.approvals} approval{'s' if d.approvals != 1 else ''})" if d.approvals else "")
    print(f"{reply.skill} (risk {reply.risk}): rule '{d.rule}' -> {action}")
    if d.reason:
        print(f"  reason: {d.reason}")
    for line in d.explanation:
        print(f"  because {line}")


def register(app: typer.Typer) -> None:
    """Add `claw guard ...`."""
    app.add_typer(group, name="guard")
