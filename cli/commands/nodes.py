"""`claw nodes`: the worker nodes the coordinator knows."""

from __future__ import annotations

import time

import typer

from cli.context import query
from cli.options import JsonFlag
from cli.output import emit_table, fmt_ago
from common.models import NodeView
from common.states import NodeControl, NodeStatus


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
                node_status_text(n),
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
