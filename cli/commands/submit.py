"""`claw submit`: one task, or one per line of a JSONL file; with `--wait`, until they end."""

from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from opentelemetry.trace import SpanKind

from cli.artifacts import offload_large_inputs
from cli.context import client_config, connect
from cli.inputs import read_inputs
from cli.options import JsonFlag
from cli.output import emit_json, fmt_duration
from cli.runner import run_async
from cli.task_text import result_text
from common.api import SubmitResult
from common.errors import ClawError
from common.models import TaskSpec
from common.states import Priority, TaskState
from common.tracing import tracer
from communication.api_client import ClawClient


def submit(
    ctx: typer.Context,
    skill: Annotated[str, typer.Argument(help="The skill to run, e.g. echo.")],
    input: Annotated[str | None, typer.Option("--input", "-i", help="The input, a JSON object.")] = None,
    input_file: Annotated[
        Path | None,
        typer.Option("--input-file", "-f", help="A .json object, or .jsonl with one task per line ('-': stdin)."),
    ] = None,
    priority: Annotated[Priority, typer.Option(help="Queue priority.")] = Priority.NORMAL,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Submitting the same key again returns the first task (line N of a file gets KEY:N)."),
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds an attempt may run.", min=0.001)] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts before the task gives up.", min=1)] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until finished; exit 1 unless all succeeded.")] = False,
    queue_wait: Annotated[
        float,
        typer.Option(help="When a skill's queue is full, keep trying this many seconds instead of failing.", min=0),
    ] = 0.0,
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
            )
            for i, raw in enumerate(inputs, start=1)
        ]
        async with await connect(cfg) as client:
            specs = await offload_large_inputs(specs, client, cfg.artifacts)
            started = time.monotonic()
            with tracer().start_as_current_span(
                "claw.submit", kind=SpanKind.CLIENT, attributes={"claw.skill": skill, "claw.tasks": len(specs)}
            ):
                results = await client.submit_many(specs, submitter=getpass.getuser(), queue_wait_s=queue_wait)
            if not wait:
                if json_out:
                    emit_json(results)
                else:
                    render_submitted(results, skill, priority.value)
                return 0
            final = await client.wait([r.task_id for r in results], on_unavailable=_still_waiting)
            elapsed = time.monotonic() - started
            return await _report_wait(client, results, final, elapsed, json_out)

    raise typer.Exit(run_async(main()))


def _still_waiting(error: ClawError) -> None:
    sys.stderr.write(f"warning: {error} - still waiting for the tasks\n")


def _line_key(key: str | None, line: int, total: int) -> str | None:
    if key is None or total == 1:
        return key
    return f"{key}:{line}"


async def _report_wait(
    client: ClawClient, results: list[Any], final: dict[str, TaskState], elapsed: float, json_out: bool
) -> int:
    ok = all(state == TaskState.SUCCEEDED for state in final.values())
    if len(results) == 1:
        task = await client.get_task(results[0].task_id, history=False)
        if json_out:
            emit_json(task)
        elif task.state == TaskState.SUCCEEDED:
            print(f"{task.task_id} succeeded in {fmt_duration(elapsed)}: {result_text(task)}")
        else:
            print(f"{task.task_id} {task.state.value}: {task.error_type}: {task.error_message}")
        return 0 if ok else 1
    counts: dict[str, int] = {}
    for state in final.values():
        counts[state.value] = counts.get(state.value, 0) + 1
    if json_out:
        emit_json({"tasks": len(results), "elapsed_s": round(elapsed, 3), "states": counts, "results": final})
    else:
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        print(f"{len(results)} tasks finished in {fmt_duration(elapsed)}: {summary}")
    return 0 if ok else 1


def render_submitted(results: list[SubmitResult], skill: str, priority: str) -> None:
    """`claw submit` without --wait: one line per task."""
    for result in results:
        note = " (duplicate: an earlier task has this idempotency key)" if result.duplicate else ""
        print(f"{result.task_id}  {skill}  {priority}  {result.state.value}{note}")


def register(app: typer.Typer) -> None:
    """Add `claw submit`."""
    app.command()(submit)
