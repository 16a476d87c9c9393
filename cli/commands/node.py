"""`claw node pause|drain|resume ID`: what one worker node should do.

The coordinator records the state (it survives its restart and the node's), sends it to the node,
and answers with what the node does now; `claw nodes` shows it in the STATUS column.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from typing import Annotated

import msgspec
import typer

from cli.context import client_config
from cli.options import JsonFlag
from cli.output import emit_json, fmt_duration
from cli.runner import run_async
from common.api import NodeControlReply
from common.config import ClawConfig
from common.errors import ClawError
from common.states import NodeControl, NodeStatus
from communication.api_client import ClawClient

group = typer.Typer(help="Control one worker node: pause, drain, resume.", no_args_is_help=True)


class DrainWaitError(ClawError):
    """`claw node drain --wait` ended before the node was drained."""

    code = "not_drained"


NodeArg = Annotated[str, typer.Argument(help="The node id, as `claw nodes` shows it.")]
POLL_S = 0.25


@group.command("pause")
def node_pause(ctx: typer.Context, node_id: NodeArg, json_out: JsonFlag = False) -> None:
    """Stop a node pulling tasks (running ones finish); it stays paused, also across restarts, until resumed."""
    _control(ctx, node_id, NodeControl.PAUSED, json_out)


@group.command("drain")
def node_drain(
    ctx: typer.Context,
    node_id: NodeArg,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until its running tasks ended.")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up after this many seconds.", min=0)] = 3600.0,
    json_out: JsonFlag = False,
) -> None:
    """Let a node finish its running tasks and pull nothing more; it shows `drained` when they end."""
    _control(ctx, node_id, NodeControl.DRAINED, json_out, wait_s=timeout if wait else None)


@group.command("resume")
def node_resume(ctx: typer.Context, node_id: NodeArg, json_out: JsonFlag = False) -> None:
    """Let a paused or drained node pull tasks again."""
    _control(ctx, node_id, NodeControl.ACTIVE, json_out)


def _control(
    ctx: typer.Context, node_id: str, control: NodeControl, json_out: bool, *, wait_s: float | None = None
) -> None:
    config = client_config(ctx)
    reply = run_async(_send(config, node_id, control, wait_s))
    if json_out:
        emit_json(reply)
    else:
        print(describe(reply))


async def _send(config: ClawConfig, node_id: str, control: NodeControl, wait_s: float | None) -> NodeControlReply:
    async with await ClawClient.connect(config.nats, name="claw-cli") as client:
        reply = await client.node_control(node_id, control, by=getpass.getuser())
        if wait_s is not None and reply.status != NodeStatus.DRAINED:
            reply = await _wait_drained(client, reply, wait_s)
    return reply


async def _wait_drained(client: ClawClient, reply: NodeControlReply, wait_s: float) -> NodeControlReply:
    """Poll the registry until the node reports `drained` (its running tasks ended)."""
    started = time.monotonic()
    while True:
        node = next((n for n in await client.nodes() if n.node_id == reply.node_id), None)
        if node is not None and node.status == NodeStatus.DRAINED:
            return msgspec.structs.replace(reply, status=node.status, running=node.running, confirmed=True)
        if node is not None and node.control != NodeControl.DRAINED:
            raise DrainWaitError(f"{reply.node_id} is no longer draining: someone asked it to be {node.control.value}")
        if time.monotonic() - started >= wait_s:
            running = "?" if node is None else node.running
            raise DrainWaitError(
                f"{reply.node_id} is still draining after {fmt_duration(wait_s)} ({running} tasks running); "
                "`claw nodes` shows it, `claw task list --status running` what runs"
            )
        await asyncio.sleep(POLL_S)


def describe(reply: NodeControlReply) -> str:
    """One line for people: what was asked, and what the node does."""
    node = reply.node_id
    if not reply.confirmed:
        return (
            f"{node} is to be {reply.control.value}; it did not answer ({reply.status.value}), "
            f"and follows it when it next starts or beats"
        )
    before = "" if reply.changed else " (already asked)"
    if reply.status == NodeStatus.PAUSED:
        return f"{node} paused{before}: it pulls no tasks, {reply.running} running finish; `claw node resume {node}`"
    if reply.status == NodeStatus.DRAINING:
        return (
            f"{node} draining{before}: it pulls no tasks and {reply.running} running finish; "
            "`claw nodes` shows it drained when they end"
        )
    if reply.status == NodeStatus.DRAINED:
        return f"{node} drained{before}: nothing runs there and it pulls no tasks; `claw node resume {node}`"
    if reply.status == NodeStatus.ONLINE:
        return f"{node} resumed{before}: it pulls tasks again"
    return f"{node} is to be {reply.control.value}; it is {reply.status.value}"


def register(app: typer.Typer) -> None:
    """Add `claw node pause|drain|resume`."""
    app.add_typer(group, name="node")
