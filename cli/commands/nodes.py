"""`claw nodes`: the worker nodes the coordinator knows."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated

import typer

from cli.context import query
from cli.options import JsonFlag
from cli.output import emit_table, fmt_ago
from common.models import NodeView
from common.states import NodeControl, NodeStatus

# `claw nodes` fits a 100-column terminal: skills and labels are summarised in these widths.
SKILLS_WIDTH = 24
LABELS_WIDTH = 16


def nodes(
    ctx: typer.Context,
    wide: Annotated[
        bool, typer.Option("--wide", "-w", help="Every column, and every skill and label in full.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Worker nodes: status, load, running/capacity, last heartbeat, skills, labels."""
    query(ctx, lambda client: client.nodes(), render_wide if wide else render_nodes, json_out)


def summarise(items: Sequence[str], width: int, noun: str) -> str | None:
    """As many items as fit in `width` characters, then how many more: 'echo,fail +9'."""
    if not items:
        return None
    joined = ",".join(items)
    if len(joined) <= width:
        return joined
    for shown in range(len(items) - 1, 0, -1):
        text = f"{','.join(items[:shown])} +{len(items) - shown}"
        if len(text) <= width:
            return text
    return f"{len(items)} {noun}"


def _labels(node: NodeView) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(node.labels.items())]


def render_nodes(nodes: list[NodeView]) -> None:
    """`claw nodes`: what fits 100 columns (`--wide` for the rest)."""
    now = time.time()
    emit_table(
        ["NODE", "STATUS", "RUNNING", "CPU", "MEM", "HEARTBEAT", "SKILLS", "LABELS"],
        [
            (
                n.node_id,
                node_status_text(n),
                f"{n.running}/{n.capacity}",
                f"{n.cpu_percent:.0f}%",
                f"{n.memory_percent:.0f}%",
                fmt_ago(n.last_seen, now=now),
                summarise(n.skills, SKILLS_WIDTH, "skills"),
                summarise(_labels(n), LABELS_WIDTH, "labels"),
            )
            for n in nodes
        ],
        empty="no nodes have registered; start a worker with `claw worker start`",
    )


def render_wide(nodes: list[NodeView]) -> None:
    """`claw nodes --wide`: every column, skills and labels in full."""
    now = time.time()
    emit_table(
        [
            "NODE",
            "STATUS",
            "RUNNING",
            "CPU",
            "MEM",
            "LOAD",
            "RSS",
            "VERSION",
            "HEARTBEAT",
            "SKILLS",
            "LABELS",
        ],
        [
            (
                n.node_id,
                node_status_text(n),
                f"{n.running}/{n.capacity}",
                f"{n.cpu_percent:.0f}%",
                f"{n.memory_percent:.0f}%",
                f"{n.load1:.2f}",
                f"{n.rss_mb:.0f} MB",
                n.version,
                fmt_ago(n.last_seen, now=now),
                ",".join(n.skills),
                ",".join(_labels(n)) or None,
            )
            for n in nodes
        ],
        empty="no nodes have registered; start a worker with `claw worker start`",
    )


# The statuses that show a node does what the coordinator asks of it.
_FOLLOWS = {
    NodeControl.ACTIVE: (NodeStatus.ONLINE,),
    NodeControl.PAUSED: (NodeStatus.PAUSED,),
    NodeControl.DRAINED: (NodeStatus.DRAINING, NodeStatus.DRAINED),
}


def node_status_text(node: NodeView) -> str:
    """The STATUS cell of `claw nodes`: what the node does, and what it was asked when that differs
    (`online -> paused` until it applies a pause; `offline (paused)`: it comes back paused)."""
    status = node.status.value
    if node.status in (NodeStatus.OFFLINE, NodeStatus.STOPPING):
        return status if node.control == NodeControl.ACTIVE else f"{status} ({node.control.value})"
    if node.status in _FOLLOWS[node.control]:
        return status
    return f"{status} -> {node.control.value}"


def register(app: typer.Typer) -> None:
    """Add `claw nodes`."""
    app.command()(nodes)
