"""`claw task watch ID`: a task's timeline, then its progress live until it ends.

It listens before it reads the history (so nothing falls between the two), skips live events the
history already showed (by event id), and polls the task's state every few seconds in case a
broadcast was missed. The exit code is 0 when the task succeeded, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import TextIO

from nats.aio.msg import Msg

from cli.task_text import task_summary
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
from common.models import EventView, TaskUpdate
from common.states import TERMINAL_STATES, TaskState
from communication.api_client import ClawClient
from communication.codec import DecodeError, decode, decode_event

POLL_S = 2.0


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S.%f")[:-3]


def history_line(event: EventView) -> str:
    """One line for a recorded event."""
    detail = "" if bytes(event.data) == b"null" else " " + bytes(event.data).decode()
    change = f" {event.to_state.value}" if event.to_state is not None and event.kind != event.to_state.value else ""
    attempt = f" #{event.attempt}" if event.attempt else ""
    return f"{_clock(event.at)}  {event.kind}{attempt}{change}{detail}"


def live_line(event: TaskEvent) -> str:
    """One line for an event as a worker reports it."""
    match event:
        case TaskProgress():
            pct = "" if event.percent is None else f" {event.percent:.0f}%"
            detail = f"progress{pct} {event.message}".rstrip()
        case TaskLog():
            detail = f"log {event.level}: {event.message}"
        case TaskStarted():
            detail = f"started on {event.node_id}"
        case TaskVerifying():
            detail = f"verifying the result ({event.check})"
        case TaskSucceeded():
            detail = "succeeded"
        case TaskFailed():
            retry = f", retry in {event.retry_in_s:g} s" if event.retry_in_s is not None else ""
            detail = f"failed: {event.error_type}: {event.message}{retry}"
        case TaskArtifact():
            detail = f"artifact {event.ref.name} ({event.ref.size} bytes)"
        case _:
            detail = type(event).__name__.removeprefix("Task").lower()
    return f"{_clock(event.at)}  #{event.attempt} {detail}"


async def watch(client: ClawClient, task_id: str, out: TextIO = sys.stdout) -> int:
    """Print the timeline and follow the task until it ends; returns the exit code."""
    subjects = client.conn.subjects
    lines: asyncio.Queue[str] = asyncio.Queue()
    ended = asyncio.Event()
    seen: set[str] = set()

    async def on_event(msg: Msg) -> None:
        try:
            event = decode_event(msg.data)
        except DecodeError:
            return
        if event.event_id not in seen:
            seen.add(event.event_id)
            lines.put_nowait(live_line(event))

    async def on_update(msg: Msg) -> None:
        try:
            update = decode(msg.data, TaskUpdate)
        except DecodeError:
            return
        lines.put_nowait(f"{_clock(update.at)}  state {update.state.value}")
        if update.state in TERMINAL_STATES:
            ended.set()

    subs = [
        await client.conn.nc.subscribe(subjects.events(task_id), cb=on_event),
        await client.conn.nc.subscribe(subjects.updates(task_id), cb=on_update),
    ]
    try:
        await client.conn.nc.flush()
        task = await client.get_task(task_id)
        for event in task.events:
            if event.event_id:
                seen.add(event.event_id)
            print(history_line(event), file=out, flush=True)
        if task.state in TERMINAL_STATES:
            ended.set()
        while not ended.is_set():
            try:
                async with asyncio.timeout(POLL_S):
                    print(await lines.get(), file=out, flush=True)
                    continue
            except TimeoutError:
                pass
            state = (await client.task_states([task_id])).get(task_id)
            if state in TERMINAL_STATES:
                ended.set()
        while not lines.empty():
            print(lines.get_nowait(), file=out, flush=True)
    finally:
        for sub in subs:
            await sub.unsubscribe()
    final = await client.get_task(task_id)
    for line in task_summary(final):
        print(line, file=out, flush=True)
    return 0 if final.state == TaskState.SUCCEEDED else 1
