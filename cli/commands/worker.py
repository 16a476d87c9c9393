"""`claw worker start`: one worker process, or several supervised ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.context import command_config, start_tracing
from cli.options import ConfigFlag, LogJsonFlag
from cli.runner import fail, run_service, set_process_title
from common.config import parse_labels
from common.errors import ClawError
from common.log import configure_logging

group = typer.Typer(help="Worker processes.", no_args_is_help=True)


@group.command("start")
def worker_start(
    ctx: typer.Context,
    config: ConfigFlag = None,
    skills: Annotated[
        str | None, typer.Option(help="Comma-separated skills to run.", show_default="all it can load")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Tasks run at once.", show_default="8")] = None,
    node_id: Annotated[str | None, typer.Option(help="This node's id.", show_default="<host>-<pid>")] = None,
    label: Annotated[
        list[str] | None, typer.Option(metavar="<k=v>", help="A label of this node; repeat for more.")
    ] = None,
    processes: Annotated[
        int, typer.Option(help="Run this many worker processes, restarting any that crashes.", min=1)
    ] = 1,
    json_out: LogJsonFlag = False,
) -> None:
    """Run a worker until SIGINT/SIGTERM (then it finishes running tasks within its grace period)."""
    from worker.service import Worker, default_node_id

    try:
        labels = parse_labels(label) if label else None
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    skill_list = [s.strip() for s in skills.split(",") if s.strip()] if skills else None
    cfg = command_config(
        ctx,
        config,
        worker={"skills": skill_list, "concurrency": concurrency, "node_id": node_id, "labels": labels},
        log={"format": "json" if json_out else None},
    )
    if processes > 1:
        from cli.supervision import WorkerSupervisor

        configure_logging(cfg.log, process="worker-supervisor")
        set_process_title(f"claw worker supervisor {cfg.worker.node_id or ''}".rstrip())
        supervisor = WorkerSupervisor(
            processes=processes,
            node_id=cfg.worker.node_id or default_node_id(),
            child_args=_passthrough(config, skills, concurrency, label) + (["--json"] if json_out else []),
            nats_url=cfg.nats.url,
            grace_s=cfg.worker.shutdown_grace_s,
        )
        run_service(supervisor.serve)
        return
    configure_logging(cfg.log, process="worker")
    set_process_title(f"claw worker {cfg.worker.node_id or ''}".rstrip())
    start_tracing(cfg, "claw-worker")

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


def register(app: typer.Typer) -> None:
    """Add `claw worker ...`."""
    app.add_typer(group, name="worker")
