"""The deferred `started` event: late or never for short attempts, always before the attempt's
other events."""

from __future__ import annotations

import asyncio
import threading

from common.events import TaskEvent, TaskLog, TaskStarted
from worker.started_event import DeferredStart


def started() -> TaskStarted:
    return TaskStarted(event_id="e1", task_id="t1", attempt=1, node_id="n1", at=1.0)


def log_line(message: str) -> TaskLog:
    return TaskLog(event_id=message, task_id="t1", attempt=1, node_id="n1", at=2.0, message=message)


async def test_an_attempt_over_before_the_delay_sends_no_started_event() -> None:
    sent: list[TaskEvent] = []
    start = DeferredStart(started(), sent.append, asyncio.get_running_loop(), delay_s=0.05)
    assert start.settle() is False
    await asyncio.sleep(0.1)  # past the delay: the cancelled timer must not fire
    assert sent == []


async def test_a_long_attempt_sends_started_once_the_delay_has_passed() -> None:
    sent: list[TaskEvent] = []
    fired = asyncio.Event()

    def record(event: TaskEvent) -> None:
        sent.append(event)
        fired.set()

    start = DeferredStart(started(), record, asyncio.get_running_loop(), delay_s=0.01)
    assert sent == []
    await asyncio.wait_for(fired.wait(), timeout=10)
    assert start.settle() is True
    assert [type(e) for e in sent] == [TaskStarted]


async def test_the_handlers_first_event_sends_started_before_it_even_from_a_thread() -> None:
    sent: list[TaskEvent] = []
    lock = threading.Lock()

    def record(event: TaskEvent) -> None:
        with lock:
            sent.append(event)

    start = DeferredStart(started(), record, asyncio.get_running_loop(), delay_s=60)
    threads = [threading.Thread(target=start.emit, args=(log_line(f"l{i}"),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert start.settle() is True
    assert isinstance(sent[0], TaskStarted) and len(sent) == 5
    assert sum(isinstance(e, TaskStarted) for e in sent) == 1


async def test_a_zero_delay_sends_started_at_once() -> None:
    sent: list[TaskEvent] = []
    start = DeferredStart(started(), sent.append, asyncio.get_running_loop(), delay_s=0)
    assert [type(e) for e in sent] == [TaskStarted]
    assert start.settle() is True
