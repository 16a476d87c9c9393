"""`claw task watch ID`: a task's timeline, then its progress live until it ends.

It listens before it reads the history (so nothing falls between the two), skips live events the
history already showed (by event id), and polls the task's state every few seconds in case a
broadcast was missed. The exit code is 0 when the task succeeded, 1 otherwise.

Recorded and live events print in one format, `HH:MM:SS.mmm  #ATTEMPT KIND [-> STATE] DETAIL`, so a
progress line reads the same whether it came from the history or live; with `--json` each is one
JSON object per line (`WatchLine`), and the last line holds the finished task.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import Any, TextIO

import msgspec
from nats.aio.msg import Msg

from cli.task_text import decode_data, event_detail, task_summary
from common.events import (
    TaskArtifact,
    TaskEvent,
    TaskFailed,
    TaskLog,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    TaskVerifying,
)
from common.models import EventView, TaskUpdate, TaskView
from common.states import TERMINAL_STATES, TaskState
from communication.api_client import ClawClient
from communication.codec import DecodeError, decode, decode_event

POLL_S = 2.0
# Without live events (an authenticated client), how often the recorded timeline is read.
RECORDED_POLL_S = 1.0


class WatchLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line of `claw task watch`: a recorded event, a live one, or a state change."""

    at: float
    kind: str
    attempt: int = 0
    state: TaskState | None = None
    node_id: str | None = None
    data: dict[str, Any] = {}


class WatchEnd(msgspec.Struct, frozen=True, kw_only=True):
    """The last line of `claw task watch --json`: the task as it ended."""

    kind: str = "end"
    task: TaskView


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S.%f")[:-3]


def text(line: WatchLine) -> str:
    """A line for people."""
    attempt = f"#{line.attempt} " if line.attempt else ""
    change = f" -> {line.state.value}" if line.state is not None and line.state.value != line.kind else ""
    detail = event_detail(line.kind, line.data, line.node_id)
    return f"{_clock(line.at)}  {attempt}{line.kind}{change}{' ' + detail if detail else ''}"


def from_history(event: EventView) -> WatchLine:
    """A recorded event."""
    return WatchLine(
        at=event.at,
        kind=event.kind,
        attempt=event.attempt,
        state=event.to_state,
        node_id=event.node_id,
        data=decode_data(event.data),
    )


def from_live(event: TaskEvent) -> WatchLine:
    """An event as a worker reports it, in the words the coordinator records it with."""
    data: dict[str, Any]
    match event:
        case TaskProgress():
            kind, data = "progress", {"percent": event.percent, "message": event.message}
        case TaskLog():
            kind, data = "log", {"level": event.level, "message": event.message}
        case TaskStarted():
            kind, data = "started", {}
        case TaskVerifying():
            kind, data = "verifying", {"check": event.check}
        case TaskSucceeded():
            kind, data = "succeeded", {}
        case TaskFailed():
            kind = "failed"
            data = {"error_type": event.error_type, "message": event.message, "retry_in_s": event.retry_in_s}
        case TaskArtifact():
            kind, data = "artifact", {"name": event.ref.name, "size": event.ref.size}
        case _:
            kind, data = type(event).__name__.removeprefix("Task").lower(), {}
    data = {k: v for k, v in data.items() if v is not None}
    return WatchLine(at=event.at, kind=kind, attempt=event.attempt, node_id=event.node_id, data=data)


def from_update(update: TaskUpdate) -> WatchLine:
    """A state change the coordinator broadcast."""
    return WatchLine(at=update.at, kind="state", state=update.state)


async def watch(client: ClawClient, task_id: str, out: TextIO = sys.stdout, *, json_out: bool = False) -> int:
    """Print the timeline and follow the task until it ends; returns the exit code."""
    subjects = client.conn.subjects
    lines: asyncio.Queue[WatchLine] = asyncio.Queue()
    ended = asyncio.Event()
    seen: set[str] = set()
    last_state: list[str] = [""]

    def show(line: WatchLine) -> None:
        state = line.state.value if line.state is not None else line.kind
        if line.kind == "state" and state == last_state[0]:
            return  # the event just shown already said so
        last_state[0] = state
        out.write((msgspec.json.encode(line).decode() if json_out else text(line)) + "\n")
        out.flush()

    async def on_event(msg: Msg) -> None:
        try:
            event = decode_event(msg.data)
        except DecodeError:
            return
        if event.event_id not in seen:
            seen.add(event.event_id)
            lines.put_nowait(from_live(event))

    async def on_update(msg: Msg) -> None:
        try:
            update = decode(msg.data, TaskUpdate)
        except DecodeError:
            return
        lines.put_nowait(from_update(update))
        if update.state in TERMINAL_STATES:
            ended.set()

    # On an authenticated server only the coordinator reads events (they hold inputs and results):
    # a client follows the recorded timeline instead, polled more often.
    live = client.conn.reads_events
    subs = [await client.conn.nc.subscribe(subjects.updates(task_id), cb=on_update)]
    if live:
        subs.append(await client.conn.nc.subscribe(subjects.events_of(task_id), cb=on_event))
    poll_s = POLL_S if live else RECORDED_POLL_S
    try:
        await client.conn.nc.flush()
        task = await client.get_task(task_id)
        for event in task.events:
            if event.event_id:
                seen.add(event.event_id)
            show(from_history(event))
        if task.state in TERMINAL_STATES:
            ended.set()
        while not ended.is_set():
            try:
                async with asyncio.timeout(poll_s):
                    show(await lines.get())
                    continue
            except TimeoutError:
                pass
            if live:
                state = (await client.task_states([task_id])).get(task_id)
            else:
                task = await client.get_task(task_id)
                state = task.state
                for event in task.events:
                    if event.event_id and event.event_id not in seen:
                        seen.add(event.event_id)
                        show(from_history(event))
            if state in TERMINAL_STATES:
                ended.set()
        while not lines.empty():
            show(lines.get_nowait())
    finally:
        for sub in subs:
            await sub.unsubscribe()
    final = await client.get_task(task_id)
    if json_out:
        out.write(msgspec.json.encode(WatchEnd(task=final)).decode() + "\n")
    else:
        for summary in task_summary(final):
            print(summary, file=out, flush=True)
    return 0 if final.state == TaskState.SUCCEEDED else 1
