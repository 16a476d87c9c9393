"""`claw nodes`: the worker nodes the coordinator knows."""

from __future__ import annotations

import time

import typer

from cli.context import query
from cli.options import JsonFlag
from cli.output import emit_table, fmt_ago
from common.models import NodeView


def nodes(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Worker nodes: status, skills, labels, load, running/capacity, last heartbeat."""
    query(ctx, lambda client: client.nodes(), render_nodes, json_out)


def render_nodes(nodes: list[NodeView]) -> None:
    """`claw nodes`."""
    now = time.time()
    emit_table(
        [
            "NODE",
            "STATUS",
            "SKILLS",
            "LABELS",
            "RUNNING",
            "CPU",
            "MEM",
            "LOAD",
            "RSS",
            "VERSION",
            "LAST HEARTBEAT",
        ],
        [
            (
                n.node_id,
                n.status.value,
                ",".join(n.skills),
                ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())) or None,
                f"{n.running}/{n.capacity}",
                f"{n.cpu_percent:.0f}%",
                f"{n.memory_percent:.0f}%",
                f"{n.load1:.2f}",
                f"{n.rss_mb:.0f} MB",
                n.version,
                fmt_ago(n.last_seen, now=now),
            )
            for n in nodes
        ],
        empty="no nodes have registered; start a worker with `claw worker start`",
    )


def register(app: typer.Typer) -> None:
    """Add `claw nodes`."""
    app.command()(nodes)
