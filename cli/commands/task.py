"""`claw task show|watch|trace|list|cancel|retry`: one task's record, its live progress and trace,
recent tasks, and acting on a task."""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.context import client_config, connect, query
from cli.inputs import parse_duration
from cli.listing import run_listing
from cli.options import AllFlag, JsonFlag
from cli.output import emit_fields, emit_json, emit_table, fmt_duration, fmt_time, shorten
from cli.runner import fail, run_async
from cli.task_text import (
    attempts_text,
    decode_data,
    event_detail,
    payload_text,
    render_action,
    since,
    task_summary,
)
from common.errors import ClawError
from common.models import TaskSummary, TaskView
from common.states import TaskState

group = typer.Typer(help="Inspect, cancel and re-run tasks.", no_args_is_help=True)


@group.command("show")
def task_show(ctx: typer.Context, task_id: str, json_out: JsonFlag = False) -> None:
    """A task's state, attempts, result and event timeline."""
    query(ctx, lambda client: client.get_task(task_id), render_task, json_out)


@group.command("watch")
def task_watch(
    ctx: typer.Context,
    task_id: str,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per event, then the task (JSON Lines).")
    ] = False,
) -> None:
    """Print a task's timeline, then follow its progress live until it ends (exit 1 unless it succeeded)."""
    from cli.watch import watch

    cfg = client_config(ctx)

    async def main() -> int:
        async with await connect(cfg) as client:
            return await watch(client, task_id, json_out=json_out)

    raise typer.Exit(run_async(main()))


@group.command("trace")
def task_trace(
    ctx: typer.Context,
    task_id: str,
    spans: Annotated[
        list[Path] | None,
        typer.Option(
            "--spans",
            "-s",
            metavar="<file>",
            help="A jsonl span file; repeat for each process.",
            show_default="tracing.jsonl_path",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the spans as JSON instead of a tree.")] = False,
) -> None:
    """A task's trace as a tree of spans, from the files of the jsonl traces exporter."""
    from cli.trace_tree import load_spans, span_tree

    cfg = client_config(ctx)
    files = spans or ([Path(cfg.tracing.jsonl_path)] if cfg.tracing.jsonl_path else [])
    if not files:
        fail(
            "no span files: pass --spans FILE for each process's jsonl file (OTEL_TRACES_EXPORTER=jsonl)", kind="usage"
        )

    async def trace_id() -> str | None:
        async with await connect(cfg) as client:
            return (await client.get_task(task_id, history=False)).trace_id

    found_id = run_async(trace_id())
    if not found_id:
        fail(f"task {task_id} has no trace id (it was submitted by a version without tracing)", kind="not_found")
    try:
        found = load_spans(files, found_id)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    if not found:
        names = ", ".join(str(f) for f in files)
        fail(
            f"no span of trace {found_id} in {names}; were those processes run with OTEL_TRACES_EXPORTER=jsonl?",
            kind="not_found",
        )
    if json_out:
        emit_json({"trace_id": found_id, "spans": found})
        return
    print(f"trace {found_id} ({len(found)} spans)")
    print("\n".join(span_tree(found)))


@group.command("list")
def task_list(
    ctx: typer.Context,
    status: Annotated[TaskState | None, typer.Option(help="Only tasks in this state.")] = None,
    skill: Annotated[str | None, typer.Option(help="Only tasks of this skill.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only tasks of this tenant.")] = None,
    since: Annotated[
        str | None, typer.Option(metavar="<duration>", help="Only tasks created in the last 15m, 1h, 7d, ...")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    all_: AllFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Recent tasks, newest first."""
    after = None
    if since is not None:
        try:
            after = time.time() - parse_duration(since)
        except ClawError as exc:
            fail(str(exc), kind="usage")
    run_listing(
        client_config(ctx),
        lambda client, cursor, n: client.tasks_page(
            state=status, skill=skill, limit=n, cursor=cursor, tenant=tenant, created_after=after
        ),
        render_task_list,
        limit=limit,
        all_=all_,
        json_out=json_out,
        noun="tasks",
    )


@group.command("cancel")
def task_cancel(
    ctx: typer.Context,
    task_id: str,
    reason: Annotated[str, typer.Option(help="Recorded in the task's timeline.")] = "cancelled by request",
    json_out: JsonFlag = False,
) -> None:
    """Cancel a task: a queued one never runs, a running one is stopped on its worker."""
    query(
        ctx,
        lambda client: client.cancel(task_id, reason=reason, by=getpass.getuser()),
        lambda reply: render_action(reply, "cancelled"),
        json_out,
    )


@group.command("retry")
def task_retry(ctx: typer.Context, task_id: str, json_out: JsonFlag = False) -> None:
    """Run a failed, dead or cancelled task again, as a new series of attempts."""
    query(
        ctx,
        lambda client: client.retry(task_id, by=getpass.getuser()),
        lambda reply: render_action(reply, "retried"),
        json_out,
    )


def render_task(task: TaskView) -> None:
    """`claw task show`: the record, its attempts and its event timeline."""
    end = task.finished_at
    emit_fields(
        [
            ("task", task.task_id),
            ("skill", f"{task.skill} ({task.priority.value} priority)"),
            ("state", task.state.value),
            ("tenant", task.tenant),
            ("attempts", attempts_text(task)),
            ("node", task.node_id),
            ("timeout", fmt_duration(task.timeout_s)),
            ("idempotency key", task.idempotency_key),
            ("created", fmt_time(task.created_at)),
            ("queued", f"{fmt_time(task.queued_at)} (+{since(task.created_at, task.queued_at)})"),
            ("started", f"{fmt_time(task.started_at)} (waited {since(task.queued_at, task.started_at)})"),
            ("finished", f"{fmt_time(end)} (ran {since(task.started_at, end)})"),
            ("next attempt", fmt_time(task.next_attempt_at) if task.next_attempt_at else None),
            ("trace", task.trace_id),
            ("input", payload_text(task.input)),
            ("result", payload_text(task.result)),
        ]
    )
    print("\nsummary:")
    for line in task_summary(task):
        print(f"  {line}")
    if task.error_type:
        print(f"\nerror: {task.error_type}: {task.error_message}")
        if task.error_traceback:
            print(task.error_traceback.rstrip())
    if task.attempt_log:
        print("\nattempts:")
        emit_table(
            ["#", "NODE", "STATE", "STARTED", "RAN", "ERROR"],
            [
                (
                    a.attempt if task.series <= 1 else f"{a.attempt} (series {a.series})",
                    a.node_id,
                    a.state.value,
                    fmt_time(a.started_at),
                    since(a.started_at, a.finished_at),
                    shorten(f"{a.error_type}: {a.error_message}", 80) if a.error_type else None,
                )
                for a in task.attempt_log
            ],
        )
    if task.events:
        print("\ntimeline:")
        if task.events_omitted:
            print(f"  ({task.events_omitted} events left out: the whole timeline does not fit one message)")
        base = task.events[0].at
        emit_table(
            ["TIME", "+", "EVENT", "STATE", "ATTEMPT", "NODE", "DETAIL"],
            [
                (
                    fmt_time(e.at),
                    fmt_duration(e.at - base),
                    e.kind,
                    _transition(e.from_state, e.to_state),
                    e.attempt or None,
                    e.node_id,
                    shorten(event_detail(e.kind, decode_data(e.data)), 80) or None,
                )
                for e in task.events
            ],
        )


def _transition(from_state: object, to_state: object) -> str | None:
    if to_state is None:
        return None
    to_value = getattr(to_state, "value", to_state)
    if from_state is None:
        return f"-> {to_value}"
    return f"{getattr(from_state, 'value', from_state)} -> {to_value}"


def render_task_list(tasks: list[TaskSummary]) -> None:
    """`claw task list`."""
    emit_table(
        ["TASK", "SKILL", "STATE", "PRIORITY", "TENANT", "ATTEMPTS", "NODE", "CREATED", "RAN"],
        [
            (
                t.task_id,
                t.skill,
                t.state.value,
                t.priority.value,
                t.tenant,
                t.attempts,
                t.node_id,
                fmt_time(t.created_at),
                since(t.started_at, t.finished_at),
            )
            for t in tasks
        ],
        empty="no tasks",
    )


def register(app: typer.Typer) -> None:
    """Add `claw task ...`."""
    app.add_typer(group, name="task")
