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

# `claw nodes` fits a terminal this wide: skills and labels are summarised in what the other
# columns leave (`--wide` shows them in full).
TABLE_WIDTH = 100
# The narrowest a summary gets: '12 skills', '3 labels'.
MIN_SUMMARY_WIDTH = 10
COLUMN_GAP = 2  # emit_table's


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
    headers = ["NODE", "STATUS", "RUNNING", "CPU", "MEM", "HEARTBEAT"]
    fixed = [
        [
            n.node_id,
            node_status_text(n),
            f"{n.running}/{n.capacity}",
            f"{n.cpu_percent:.0f}%",
            f"{n.memory_percent:.0f}%",
            fmt_ago(n.last_seen, now=now),
        ]
        for n in nodes
    ]
    used = sum(max(len(cell) for cell in column) for column in zip(headers, *fixed, strict=True))
    skills_width, labels_width = summary_widths(
        TABLE_WIDTH - used - COLUMN_GAP * (len(headers) + 1),
        skills=max((len(",".join(n.skills)) for n in nodes), default=0),
        labels=max((len(",".join(_labels(n))) for n in nodes), default=0),
    )
    emit_table(
        [*headers, "SKILLS", "LABELS"],
        [
            (*cells, summarise(n.skills, skills_width, "skills"), summarise(_labels(n), labels_width, "labels"))
            for n, cells in zip(nodes, fixed, strict=True)
        ],
        empty="no nodes have registered; start a worker with `claw worker start`",
    )


def summary_widths(budget: int, *, skills: int, labels: int) -> tuple[int, int]:
    """How wide the SKILLS and LABELS cells may be within `budget` characters, given how wide they
    would be in full: labels get up to a third, skills the rest, and what one leaves the other may use."""
    skills_width = min(skills, max(MIN_SUMMARY_WIDTH, budget - min(labels, max(MIN_SUMMARY_WIDTH, budget // 3))))
    labels_width = min(labels, max(MIN_SUMMARY_WIDTH, budget - skills_width))
    return max(skills_width, MIN_SUMMARY_WIDTH), max(labels_width, MIN_SUMMARY_WIDTH)


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
