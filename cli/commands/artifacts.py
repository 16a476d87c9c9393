"""`claw artifacts list|get`: files tasks produced, and large inputs and results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.artifacts import fetch_artifact
from cli.context import client_config, connect, query
from cli.options import JsonFlag
from cli.output import emit_json, emit_table, fmt_bytes, fmt_time
from cli.runner import run_async
from common.models import ArtifactView

group = typer.Typer(help="Files tasks produced (and large inputs and results).", no_args_is_help=True)


@group.command("list")
def artifacts_list(ctx: typer.Context, task_id: str, json_out: JsonFlag = False) -> None:
    """A task's artifacts: name, size, sha256, attempt, expiry."""
    query(ctx, lambda client: client.artifacts(task_id), render_artifacts, json_out)


@group.command("get")
def artifacts_get(
    ctx: typer.Context,
    task_id: str,
    name: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the bytes.")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print what was written (path, size, sha256, ...) as JSON.")
    ] = False,
) -> None:
    """Download one artifact of a task."""
    cfg = client_config(ctx)

    async def main() -> None:
        async with await connect(cfg) as client:
            artifact = await fetch_artifact(client, cfg.artifacts, task_id, name, output)
        if json_out:
            emit_json({"path": str(output), "artifact": artifact})
        else:
            print(f"{output}: {artifact.size} bytes, sha256 {artifact.sha256[:16]}")

    run_async(main())


def render_artifacts(artifacts: list[ArtifactView]) -> None:
    """`claw artifacts list`."""
    emit_table(
        ["NAME", "ATTEMPT", "SIZE", "TYPE", "SHA256", "CREATED", "EXPIRES"],
        [
            (
                a.name,
                a.attempt or "input",
                fmt_bytes(a.size),
                a.content_type,
                a.sha256[:16],
                fmt_time(a.created_at),
                fmt_time(a.expires_at),
            )
            for a in artifacts
        ],
        empty="this task has no artifacts",
    )


def register(app: typer.Typer) -> None:
    """Add `claw artifacts ...`."""
    app.add_typer(group, name="artifacts")
