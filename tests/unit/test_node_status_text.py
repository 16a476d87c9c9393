"""The STATUS cell of `claw nodes`: what a node does, and what it was asked when that differs."""

from __future__ import annotations

import pytest

from cli.commands.nodes import node_status_text
from common.models import NodeView
from common.states import NodeControl, NodeStatus


def view(status: NodeStatus, control: NodeControl) -> NodeView:
    return NodeView(
        node_id="w1", status=status, hostname="h", pid=1, version="0", skills=[], labels={}, capacity=1,
        running=0, cpu_percent=0, memory_percent=0, rss_mb=0, load1=0, started_at=0, last_seen=0, control=control,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "control", "text"),
    [
        (NodeStatus.ONLINE, NodeControl.ACTIVE, "online"),
        (NodeStatus.PAUSED, NodeControl.PAUSED, "paused"),
        (NodeStatus.DRAINING, NodeControl.DRAINED, "draining"),
        (NodeStatus.DRAINED, NodeControl.DRAINED, "drained"),
        (NodeStatus.ONLINE, NodeControl.PAUSED, "online -> paused"),
        (NodeStatus.PAUSED, NodeControl.ACTIVE, "paused -> active"),
        (NodeStatus.OFFLINE, NodeControl.PAUSED, "offline (paused)"),
        (NodeStatus.OFFLINE, NodeControl.ACTIVE, "offline"),
        (NodeStatus.STOPPING, NodeControl.DRAINED, "stopping (drained)"),
    ],
)
def test_status_text(status: NodeStatus, control: NodeControl, text: str) -> None:
    assert node_status_text(view(status, control)) == text
