"""`claw workflow validate|register|run|list|show|watch|cancel|rerun`: DAGs of skills (docs/Workflows.md)."""

from __future__ import annotations

import asyncio
import getpass
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from cli.context import client_config, connect, query
from cli.inputs import read_inputs
from cli.options import JsonFlag
from cli.output import emit_json, emit_table, fmt_duration, fmt_time, shorten
from cli.runner import fail, run_async
from common import api, verbs
from common.errors import ClawError
from communication.api_client import ClawClient

group = typer.Typer(help="Workflows: DAGs of skills with gates, fan-outs and reruns.", no_args_is_help=True)

FINISHED = ("succeeded", "failed", "cancelled")
POLL_S = 0.25
SpecPath = Annotated[Path, typer.Argument(help="A workflow file (YAML or JSON).")]
InputOption = Annotated[str | None, typer.Option("--input", metavar="<json>", help="The run's input, a JSON object.")]
InputFileOption = Annotated[
    Path | None, typer.Option("--input-file", metavar="<file>", help="The run's input from a JSON file.")
]


def _spec_request(path: Path) -> api.WorkflowSpecRequest:
    try:
        text = path.read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", kind="invalid_input")
    except UnicodeDecodeError:
        fail(f"{path} is not UTF-8 text; a workflow is YAML or JSON", kind="invalid_input")
    return api.WorkflowSpecRequest(spec=text, source=str(path), registered_by=getpass.getuser())


def _input(inline: str | None, path: Path | None) -> msgspec.Raw | None:
    if inline is None and path is None:
        return None
    try:
        [raw] = read_inputs(inline, path)
    except (ClawError, ValueError) as exc:
        message = str(exc) if isinstance(exc, ClawError) else "the input file must hold one JSON object"
        fail(message, kind="invalid_input")
    return raw


@group.command("validate")
def workflow_validate(ctx: typer.Context, path: SpecPath, json_out: JsonFlag = False) -> None:
    """Check a workflow against the cluster's skills; registers nothing."""
    request = _spec_request(path)
    query(ctx, lambda client: client.call(verbs.WORKFLOW_VALIDATE, request), render_validated, json_out)


@group.command("register")
def workflow_register(ctx: typer.Context, path: SpecPath, json_out: JsonFlag = False) -> None:
    """Register a workflow as its next version (the same spec again registers nothing)."""
    request = _spec_request(path)
    query(ctx, lambda client: client.call(verbs.WORKFLOW_REGISTER, request), render_registered, json_out)


@group.command("run")
def workflow_run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The workflow's name.")],
    input: InputOption = None,
    input_file: InputFileOption = None,
    version: Annotated[int | None, typer.Option(help="Run this version (default: the latest).", min=1)] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Choose the run's id: running it again finds the same run.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to end; exit 1 unless it succeeded.")] = False,
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            metavar="<name>",
            help="Whose run it is: its node tasks count against the tenant's quotas and share (default: default).",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Start a run of a registered workflow."""
    raw = _input(input, input_file) or msgspec.Raw(b"{}")
    request = api.WorkflowRunRequest(
        name=name, input=raw, version=version, run_id=run_id, submitter=getpass.getuser(), tenant=tenant
    )
    _start(ctx, lambda client: client.call(verbs.WORKFLOW_RUN, request), wait, json_out)


@group.command("rerun")
def workflow_rerun(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to start again from a node.")],
    from_node: Annotated[str, typer.Option("--from", help="Run this node and everything after it again.")],
    input: InputOption = None,
    input_file: InputFileOption = None,
    version: Annotated[int | None, typer.Option(help="Use this workflow version (default: the latest).", min=1)] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to end; exit 1 unless it succeeded.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """A new run reusing the outputs of every node upstream of --from (no recomputation)."""
    request = api.WorkflowRerunRequest(
        run_id=run_id,
        from_node=from_node,
        input=_input(input, input_file),
        version=version,
        submitter=getpass.getuser(),
    )
    _start(ctx, lambda client: client.call(verbs.WORKFLOW_RERUN, request), wait, json_out)


def _start(
    ctx: typer.Context,
    call: Callable[[ClawClient], Awaitable[api.WorkflowRunReply]],
    wait: bool,
    json_out: bool,
) -> None:
    cfg = client_config(ctx)

    async def main() -> int:
        async with await connect(cfg) as client:
            reply = await call(client)
            if not wait:
                if json_out:
                    emit_json(reply)
                else:
                    note = " (existing run)" if reply.duplicate else ""
                    print(f"run {reply.run_id} of {reply.name} v{reply.version}: {reply.state}{note}")
                return 0
            view = await _until_finished(client, reply.run_id)
        if json_out:
            emit_json(view)
        else:
            render_run(view)
        return 0 if view.state == "succeeded" else 1

    raise typer.Exit(run_async(main()))


async def _until_finished(client: ClawClient, run_id: str) -> api.WorkflowRunView:
    while True:
        view = await client.call(verbs.WORKFLOW_SHOW, api.WorkflowRunGetRequest(run_id=run_id))
        if view.state in FINISHED:
            return view
        await asyncio.sleep(POLL_S)


@group.command("list")
def workflow_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only this workflow and its runs.")] = None,
    state: Annotated[str | None, typer.Option(help="Only runs in this state (running, succeeded, ...).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs, newest first.", min=1, max=1000)] = 20,
    json_out: JsonFlag = False,
) -> None:
    """Registered workflows (latest versions) and the newest runs."""
    request = api.WorkflowListRequest(name=name, state=state, limit=limit)
    query(ctx, lambda client: client.call(verbs.WORKFLOW_LIST, request), render_list, json_out)


@group.command("show")
def workflow_show(ctx: typer.Context, run_id: str, json_out: JsonFlag = False) -> None:
    """A run as a DAG: each node's state, attempts, duration, output and what it waits for."""
    request = api.WorkflowRunGetRequest(run_id=run_id)
    query(ctx, lambda client: client.call(verbs.WORKFLOW_SHOW, request), render_run, json_out)


@group.command("watch")
def workflow_watch(ctx: typer.Context, run_id: str, json_out: JsonFlag = False) -> None:
    """Follow a run: one line per node change until it ends; exit 1 unless it succeeded."""
    cfg = client_config(ctx)

    async def main() -> int:
        seen: dict[str, str] = {}
        async with await connect(cfg) as client:
            while True:
                view = await client.call(verbs.WORKFLOW_SHOW, api.WorkflowRunGetRequest(run_id=run_id))
                for node in view.nodes:
                    state = node.state + (" (waits for approval)" if node.waits_for == ["approval"] else "")
                    if seen.get(node.name) != state:
                        seen[node.name] = state
                        _watch_line(json_out, view, node, state)
                if view.state in FINISHED:
                    break
                await asyncio.sleep(POLL_S)
        if json_out:  # one object a line, like the node lines before it
            end = {"run_id": view.run_id, "state": view.state, "error": view.error}
            print(msgspec.json.encode(end).decode(), flush=True)
        else:
            print(f"run {view.run_id}: {view.state}" + (f" ({view.error})" if view.error else ""))
        return 0 if view.state == "succeeded" else 1

    raise typer.Exit(run_async(main()))


def _watch_line(json_out: bool, view: api.WorkflowRunView, node: api.WorkflowNodeView, state: str) -> None:
    if json_out:
        line = {"at": time.time(), "node": node.name, "state": node.state, "waits_for": node.waits_for}
        print(msgspec.json.encode(line).decode(), flush=True)
    else:
        print(f"{time.strftime('%H:%M:%S')} {node.name}: {state}", flush=True)


@group.command("cancel")
def workflow_cancel(
    ctx: typer.Context,
    run_id: str,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the run's record).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Cancel a run: no node starts any more and its running tasks are cancelled."""
    request = api.WorkflowCancelRequest(run_id=run_id, reason=reason or "", by=getpass.getuser())
    query(ctx, lambda client: client.call(verbs.WORKFLOW_CANCEL, request), render_run, json_out)


# --- rendering ----------------------------------------------------------------------------------------


def render_validated(reply: api.WorkflowValidateReply) -> None:
    """`claw workflow validate`."""
    print(f"{reply.name}: valid, {len(reply.order)} node(s)" + (f", trigger {reply.trigger}" if reply.trigger else ""))
    for name in reply.order:
        needs = reply.needs.get(name) or []
        print(f"  {name}" + (f" <- {', '.join(needs)}" if needs else ""))


def render_registered(reply: api.WorkflowRegisterReply) -> None:
    """`claw workflow register`."""
    if reply.unchanged:
        print(f"{reply.name} v{reply.version} unchanged (the spec equals the latest version)")
    else:
        print(f"{reply.name} v{reply.version} registered ({len(reply.order)} nodes)")


def render_list(reply: api.WorkflowListReply) -> None:
    """`claw workflow list`."""
    emit_table(
        ["WORKFLOW", "VERSION", "NODES", "TRIGGER", "REGISTERED"],
        [(w.name, w.version, w.nodes, w.trigger or "-", fmt_time(w.registered_at)) for w in reply.workflows],
        empty="no workflow registered (claw workflow register FILE)",
    )
    print()
    emit_table(
        ["RUN", "WORKFLOW", "STATE", "STARTED", "DURATION", "ERROR"],
        [
            (
                r.run_id,
                f"{r.name} v{r.version}",
                r.state,
                fmt_time(r.created_at),
                fmt_duration(None if r.finished_at is None else r.finished_at - r.created_at),
                shorten(r.error or "", 60),
            )
            for r in reply.runs
        ],
        empty="no runs",
    )


def render_run(view: api.WorkflowRunView) -> None:
    """`claw workflow show`: the run, then its DAG in dependency order, one node a line."""
    head = f"run {view.run_id}: {view.name} v{view.version}, {view.state}"
    if view.finished_at is not None:
        head += f" in {fmt_duration(view.finished_at - view.created_at)}"
    print(head)
    if view.tenant != "default":
        print(f"  tenant: {view.tenant}")
    if view.rerun_of:
        print(f"  rerun of {view.rerun_of} from {view.from_node}")
    if view.error:
        print(f"  error: {view.error}")
    if view.trace_id:
        print(f"  trace: {view.trace_id}")
    emit_table(
        ["NODE", "STATE", "SKILL", "NEEDS", "ATTEMPTS", "DURATION", "TASK", "OUTPUT / WAITS FOR"],
        [
            (
                n.name,
                _node_state(n),
                n.skill,
                ", ".join(n.needs) or "-",
                n.attempts,
                fmt_duration(n.duration_s),
                _tasks(n),
                _detail(n),
            )
            for n in view.nodes
        ],
    )


def _node_state(node: api.WorkflowNodeView) -> str:
    state = node.state
    if node.source != "run":
        state += f" ({node.source})"
    if node.items is not None:
        state += f" {node.items_done}/{node.items}"
    return state


def _tasks(node: api.WorkflowNodeView) -> str:
    if not node.task_ids:
        return "-"
    return node.task_ids[0] if len(node.task_ids) == 1 else f"{node.task_ids[0]} +{len(node.task_ids) - 1}"


def _detail(node: api.WorkflowNodeView) -> str:
    if node.waits_for:
        return "waits for " + ", ".join(node.waits_for)
    if node.error:
        return shorten(node.error, 60)
    return shorten(node.output_summary, 60)


def register(app: typer.Typer) -> None:
    """Add `claw workflow ...`."""
    app.add_typer(group, name="workflow")
