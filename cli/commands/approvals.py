"""`claw approvals`, `claw approve ID`, `claw reject ID`: tasks the guard holds for a human."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.context import client_config, query
from cli.listing import run_listing
from cli.options import AllFlag, JsonFlag
from cli.output import emit_table, fmt_ago, fmt_time, shorten
from common.api import ApprovalOutcome, ApprovalView


def approvals_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many, oldest first.", min=1)] = 100,
    all_: AllFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Tasks the guard holds until a human approves them, oldest first."""
    run_listing(
        client_config(ctx),
        lambda client, cursor, n: client.approvals_page(limit=n, cursor=cursor),
        render_approvals,
        limit=limit,
        all_=all_,
        json_out=json_out,
        noun="held tasks",
    )


def approve(
    ctx: typer.Context,
    task_id: str,
    note: Annotated[str | None, typer.Option(help="Recorded with the approval.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Approve a held task; it runs once enough different people approved."""
    query(ctx, lambda client: client.approve(task_id, by=None, note=note), render_approval_outcome, json_out)


def reject(
    ctx: typer.Context,
    task_id: str,
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    json_out: JsonFlag = False,
) -> None:
    """Reject a held task; it ends rejected."""
    query(ctx, lambda client: client.reject(task_id, by=None, reason=reason), render_approval_outcome, json_out)


def render_approvals(views: list[ApprovalView]) -> None:
    """`claw approvals`."""
    emit_table(
        ["TASK", "SKILL", "RISK", "RULE", "APPROVALS", "SUBMITTER", "WAITING", "EXPIRES", "INPUT"],
        [
            (
                v.task_id,
                v.skill,
                v.risk,
                v.rule,
                f"{len(v.approved_by)}/{v.approvals_needed}"
                + (f" ({', '.join(v.approved_by)})" if v.approved_by else ""),
                v.submitter,
                fmt_ago(v.since),
                fmt_time(v.expires_at),
                shorten(v.input_summary, 50),
            )
            for v in views
        ],
        empty="nothing waits for approval",
    )


def render_approval_outcome(outcome: ApprovalOutcome) -> None:
    """`claw approve|reject`."""
    if outcome.state.value == "waiting_approval":
        print(
            f"{outcome.task_id} approved by {', '.join(outcome.approved_by)}: "
            f"{len(outcome.approved_by)} of {outcome.approvals_needed}, still waiting"
        )
    else:
        print(f"{outcome.task_id} {outcome.state.value}")


def register(app: typer.Typer) -> None:
    """Add `claw approvals`, `claw approve` and `claw reject`."""
    app.command("approvals")(approvals_list)
    app.command()(approve)
    app.command()(reject)
