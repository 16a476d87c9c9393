"""`claw submit`: one task, or one per line of a JSONL file; with `--wait`, until they end.

While it waits it is never silent: the task id goes to stderr at once, a task the guard holds is
named with its rule, a batch shows a progress bar on a terminal, and Ctrl-C says that the tasks keep
running and how to follow them (exit 130). With `--json`, stdout is one list of `SubmittedTask`,
the same shape with and without `--wait` (with it, each entry carries the task's outcome).
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import time
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from opentelemetry.trace import SpanKind

from cli.artifacts import offload_large_inputs
from cli.context import client_config, connect
from cli.inputs import read_inputs
from cli.options import JsonFlag
from cli.output import emit_json, fmt_duration
from cli.progress import BatchProgress
from cli.runner import EXIT_INTERRUPTED, notice, report_error, run_async, until_interrupted
from cli.task_text import decode_data, result_text
from common.api import SubmitResult
from common.errors import ClawError
from common.models import JSON_NULL, TaskSpec, TaskView
from common.states import Priority, TaskState
from common.tracing import tracer
from communication.api_client import ClawClient

# Tasks fetched at once for the outcomes of `submit --wait --json`, and failures a batch lists.
FETCH_IN_FLIGHT = 16
FAILURES_SHOWN = 10


class SubmittedTask(msgspec.Struct, kw_only=True):
    """One task of `claw submit --json`: as admitted, and with `--wait` as it ended."""

    task_id: str
    skill: str
    state: TaskState
    duplicate: bool = False
    note: str = ""
    rule: str = ""
    attempts: int = 0
    result: msgspec.Raw = JSON_NULL
    error_type: str | None = None
    error_message: str | None = None
    trace_id: str | None = None

    @classmethod
    def admitted(cls, result: SubmitResult, skill: str) -> SubmittedTask:
        """What the submit reply says."""
        return cls(
            task_id=result.task_id,
            skill=skill,
            state=result.state,
            duplicate=result.duplicate,
            note=result.note,
            rule=result.rule,
        )

    def ended(self, task: TaskView) -> SubmittedTask:
        """This entry with the task's outcome."""
        return msgspec.structs.replace(
            self,
            state=task.state,
            attempts=task.attempts,
            result=task.result,
            error_type=task.error_type,
            error_message=task.error_message,
            trace_id=task.trace_id,
        )


def submit(
    ctx: typer.Context,
    skill: Annotated[str, typer.Argument(help="The skill to run, e.g. echo.")],
    input: Annotated[
        str | None, typer.Option("--input", "-i", metavar="<json>", help="The input, a JSON object.", show_default="{}")
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option("--input-file", "-f", help="A .json object, or .jsonl with one task per line ('-': stdin)."),
    ] = None,
    priority: Annotated[
        Priority,
        typer.Option(
            help="Queue priority: high takes the next free slot; under a stream of higher work normal still "
            "gets 1 start in 5 and low 1 in 10 (docs/Flow_control.md)."
        ),
    ] = Priority.NORMAL,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Submitting the same key again returns the first task (line N of a file gets KEY:N)."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds an attempt may run.", min=0.001, show_default="the skill's, else 300"),
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option(help="Attempts before the task gives up.", min=1, show_default="the skill's, else 3")
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Wait until finished (Ctrl-C stops waiting, not the tasks); exit 1 unless all succeeded."
        ),
    ] = False,
    queue_wait: Annotated[
        float,
        typer.Option(
            help="When a skill's queue or the tenant's max_queued is full, keep trying this many seconds instead of "
            "failing.",
            min=0,
        ),
    ] = 0.0,
    tenant: Annotated[
        str | None,
        typer.Option(
            help="Whose tasks these are: quotas and fair share are per tenant (docs/Flow_control.md).",
            show_default="default",
        ),
    ] = None,
    limit_key: Annotated[
        list[str] | None,
        typer.Option(
            "--limit-key", metavar="<key>", help="A limit key the task uses besides its skill's (repeatable)."
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Submit a task (or one per line of a JSONL file)."""
    cfg = client_config(ctx)

    async def main() -> int:
        inputs = read_inputs(input, input_file)
        specs = [
            TaskSpec(
                skill=skill,
                input=raw,
                priority=priority,
                timeout_s=timeout,
                max_attempts=max_attempts,
                idempotency_key=_line_key(idempotency_key, i, len(inputs)),
                limit_keys=list(limit_key or []),
            )
            for i, raw in enumerate(inputs, start=1)
        ]
        async with await connect(cfg) as client:
            specs = await offload_large_inputs(specs, client, cfg.artifacts)
            started = time.monotonic()
            with tracer().start_as_current_span(
                "claw.submit", kind=SpanKind.CLIENT, attributes={"claw.skill": skill, "claw.tasks": len(specs)}
            ):
                results = await client.submit_many(
                    specs, submitter=getpass.getuser(), queue_wait_s=queue_wait, tenant=tenant
                )
            tasks = [SubmittedTask.admitted(r, skill) for r in results]
            if not wait:
                if json_out:
                    emit_json(tasks)
                else:
                    render_submitted(results, skill, priority.value)
                return 0
            return await _wait(client, tasks, started, json_out)

    raise typer.Exit(run_async(main()))


async def _wait(client: ClawClient, tasks: list[SubmittedTask], started: float, json_out: bool) -> int:
    """`--wait`: say what it waits for, wait (with a progress bar for a batch), report the outcome."""
    await _announce(client, tasks)
    ids = [t.task_id for t in tasks]
    final: dict[str, TaskState] = {}
    show_bar = len(tasks) > 1 and not json_out and sys.stderr.isatty()
    with BatchProgress(len(tasks), enabled=show_bar) as bar:

        def finished(task_id: str, state: TaskState) -> None:
            final[task_id] = state
            bar.advance(failed=state != TaskState.SUCCEEDED)

        completed, _ = await until_interrupted(client.wait(ids, on_finished=finished, on_unavailable=_still_waiting))
    if not completed:
        return _interrupted(tasks, final, json_out)
    elapsed = time.monotonic() - started
    ok = all(state == TaskState.SUCCEEDED for state in final.values())
    if json_out:
        emit_json(await _outcomes(client, tasks))
    elif len(tasks) == 1:
        _render_one(await client.get_task(tasks[0].task_id, history=False), elapsed)
    else:
        await _render_batch(client, final, elapsed)
    return 0 if ok else 1


async def _announce(client: ClawClient, tasks: list[SubmittedTask]) -> None:
    """On stderr at once: which task(s) this waits for, and which wait for a human."""
    if len(tasks) == 1:
        task = tasks[0]
        notice(f"{task.task_id} submitted; waiting for it to finish", task_id=task.task_id)
    else:
        notice(
            f"{len(tasks)} tasks submitted ({tasks[0].task_id} .. {tasks[-1].task_id}); waiting for them to finish",
            tasks=len(tasks),
        )
    held = [t for t in tasks if t.state == TaskState.WAITING_APPROVAL]
    if not held:
        return
    rule = held[0].rule or await _held_rule(client, held[0].task_id)
    because = f"rule '{rule}'; " if rule else ""
    if len(tasks) == 1:
        notice(
            f"{held[0].task_id} waiting for approval ({because}`claw approvals`, `claw approve {held[0].task_id}`)",
            task_id=held[0].task_id,
            state=TaskState.WAITING_APPROVAL.value,
            rule=rule,
        )
    else:
        notice(
            f"{len(held)} of {len(tasks)} tasks waiting for approval ({because}`claw approvals`)",
            waiting_approval=len(held),
            rule=rule,
        )


async def _held_rule(client: ClawClient, task_id: str) -> str:
    """The guard rule that holds a task (a duplicate submit's reply does not name it)."""
    try:
        task = await client.get_task(task_id)
    except ClawError:
        return ""
    held = [e for e in task.events if e.kind == "held"]
    return str(decode_data(held[-1].data).get("rule", "")) if held else ""


def _still_waiting(error: ClawError) -> None:
    notice(f"warning: {error} - still waiting for the tasks")


def _interrupted(tasks: list[SubmittedTask], final: dict[str, TaskState], json_out: bool) -> int:
    """Ctrl-C while waiting: the tasks are not cancelled; say so and how to follow them."""
    if len(tasks) == 1:
        task_id = tasks[0].task_id
        held = tasks[0].state == TaskState.WAITING_APPROVAL and task_id not in final
        goes_on = f"keeps waiting for approval (`claw approve {task_id}`)" if held else "keeps running"
        message = (
            f"stopped waiting; task {task_id} {goes_on}: follow it with `claw task watch {task_id}` "
            f"(or stop it with `claw task cancel {task_id}`)"
        )
    else:
        message = (
            f"stopped waiting with {len(final)} of {len(tasks)} tasks finished; the others keep running: "
            "follow them with `claw task list` and `claw task watch ID`"
        )
    if json_out:
        emit_json([msgspec.structs.replace(t, state=final.get(t.task_id, t.state)) for t in tasks])
        report_error(message, "interrupted")
    else:
        sys.stderr.write(f"\n{message}\n")
    return EXIT_INTERRUPTED


async def _outcomes(client: ClawClient, tasks: list[SubmittedTask]) -> list[SubmittedTask]:
    """Each task with how it ended (results and errors), fetched a few at a time."""
    limit = asyncio.Semaphore(FETCH_IN_FLIGHT)

    async def outcome(task: SubmittedTask) -> SubmittedTask:
        async with limit:
            return task.ended(await client.get_task(task.task_id, history=False))

    return list(await asyncio.gather(*(outcome(t) for t in tasks)))


def _render_one(task: TaskView, elapsed: float) -> None:
    if task.state == TaskState.SUCCEEDED:
        print(f"{task.task_id} succeeded in {fmt_duration(elapsed)}: {result_text(task)}")
    else:
        print(f"{task.task_id} {task.state.value}: {task.error_type}: {task.error_message}")


async def _render_batch(client: ClawClient, final: dict[str, TaskState], elapsed: float) -> None:
    counts: dict[str, int] = {}
    for state in final.values():
        counts[state.value] = counts.get(state.value, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    print(f"{len(final)} tasks finished in {fmt_duration(elapsed)}: {summary}")
    failed = [task_id for task_id, state in final.items() if state != TaskState.SUCCEEDED]
    for task_id in failed[:FAILURES_SHOWN]:
        task = await client.get_task(task_id, history=False)
        print(f"  {task_id} {task.state.value}: {task.error_type}: {task.error_message}")
    if len(failed) > FAILURES_SHOWN:
        print(f"  ... and {len(failed) - FAILURES_SHOWN} more: claw task list --status failed (or dead)")


def _line_key(key: str | None, line: int, total: int) -> str | None:
    if key is None or total == 1:
        return key
    return f"{key}:{line}"


def render_submitted(results: list[SubmitResult], skill: str, priority: str) -> None:
    """`claw submit` without --wait: one line per task, with why it is not queued when it is not."""
    for result in results:
        note = " (duplicate: an earlier task has this idempotency key)" if result.duplicate else ""
        if result.note:  # held, denied, failed, or waiting for its tenant's share
            note += f" - {result.note}"
        print(f"{result.task_id}  {skill}  {priority}  {result.state.value}{note}")
    if any(r.state == TaskState.WAITING_APPROVAL for r in results) and len(results) > 1:
        print("tasks waiting for approval are listed by `claw approvals`")


def register(app: typer.Typer) -> None:
    """Add `claw submit`."""
    app.command()(submit)
