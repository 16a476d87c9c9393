"""The STATUS cell of `claw nodes`: what a node does, and what it was asked when that differs; and the
table that fits 100 columns with it."""

from __future__ import annotations

import re
import time

import msgspec
import pytest

from cli.commands.nodes import node_status_text, render_nodes, summary_widths
from common.models import NodeView
from common.states import NodeControl, NodeStatus
from tests.helpers import BUILTIN_SKILLS


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


def test_the_nodes_table_fits_100_columns_with_control_states_and_long_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The widest STATUS cells (`stopping (drained)`, `draining -> paused`) and a long node id leave
    less room: skills and labels are summarised into what is left, the rest stays whole."""
    skills = BUILTIN_SKILLS.split(", ")
    labels = {"gpu": "true", "zone": "eu-west-1", "rack": "r12"}
    nodes = [
        msgspec.structs.replace(
            view(status, control),
            node_id=f"build-host-{i:02d}-w1",
            skills=skills,
            labels=labels,
            last_seen=time.time() - 12.5,  # "12.5s ago"
        )
        for i, (status, control) in enumerate(
            [
                (NodeStatus.STOPPING, NodeControl.DRAINED),
                (NodeStatus.DRAINING, NodeControl.PAUSED),
                (NodeStatus.ONLINE, NodeControl.PAUSED),
            ]
        )
    ]
    render_nodes(nodes)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and max(len(line) for line in lines) <= 100, "\n".join(lines)
    assert "stopping (drained)" in lines[1] and "draining -> paused" in lines[2] and "online -> paused" in lines[3]
    assert re.search(r"echo,fail\S* \+\d+", lines[1]), lines[1]  # summarised, not cut mid-name


def test_summaries_share_what_the_other_columns_leave() -> None:
    assert summary_widths(60, skills=20, labels=30) == (20, 30)  # both fit whole
    assert summary_widths(40, skills=100, labels=23) == (27, 13)  # labels up to a third
    assert summary_widths(40, skills=10, labels=50) == (10, 30)  # what skills leave, labels use
    assert summary_widths(5, skills=100, labels=100) == (10, 10)  # never narrower than '12 skills'
