"""After-commit listeners: what reacts to committed changes, each isolated from the others.

The task writer calls `dispatch` on the event loop right after every commit (storage/task_writer.py)
with what the transaction committed (`storage/commits.py`: its event-log rows, its tasks as
committed). A listener never sees a change that was rolled back or undone, and sees every commit in
commit order. There are two kinds:

- **queued** (`add`, the default): an async function called with the commits made since its last
  call, oldest first, from a task and a queue of its own. Commits never wait for it, and a slow
  listener delays only itself. Its queue is bounded (`QUEUE_MAX` commits): when it is full the
  oldest commit is dropped for it, counted (`claw status`) and logged, since a listener that far
  behind matters less than a coordinator whose memory grows without bound. The broadcast of task
  states (`claw.updates.<task_id>`) is one: its watchers also poll.
- **inline** (`add_inline`): a plain function called within `dispatch` itself, so before the
  coroutine that committed resumes. For cheap bookkeeping without I/O that must see every commit
  at once: the metrics counters, the alert log. It runs on the event loop: it must not block.

A committer whose own work after the commit must come before what the queued listeners do holds
them meanwhile (`held()`): the commits made while a hold is open reach the queued listeners once it
is closed; commits made before it go on flowing (so a committer that holds again and again, as
event intake does batch after batch, starves nobody). Event intake publishes the dead letters and
acks the events of a batch before the broadcast tells a `claw submit --wait` that its task is dead,
so that `claw dlq list` then shows the letter. Inline listeners are never held.

A listener that raises is logged with its traceback and counted; the other listeners, the commit
and whoever committed carry on. On shutdown, once the loops that commit have stopped, each queued
listener gets what is still in its queue (for up to `DRAIN_TIMEOUT_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from common.log import get_logger
from common.models import ListenerView
from storage.commits import Committed

log = get_logger("coordinator.listeners")

QUEUE_MAX = 10_000
DRAIN_TIMEOUT_S = 5.0
ERROR_CHARS = 300

InlineListener = Callable[[Committed], None]
QueuedListener = Callable[[Sequence[Committed]], Awaitable[None]]


@dataclass(slots=True)
class _Listener:
    name: str
    inline: InlineListener | None = None
    queued: QueuedListener | None = None
    # (sequence number, commit), oldest first.
    pending: deque[tuple[int, Committed]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0
    failures: int = 0
    dropped: int = 0
    last_error: str | None = None
    # Set while commits are being dropped: the overflow is logged once per episode.
    overflowing: bool = False

    def view(self) -> ListenerView:
        return ListenerView(
            name=self.name,
            inline=self.inline is not None,
            calls=self.calls,
            failures=self.failures,
            dropped=self.dropped,
            queued=len(self.pending),
            last_error=self.last_error,
        )


class CommitListeners:
    """The after-commit listeners of one coordinator, by name."""

    def __init__(self, *, queue_max: int = QUEUE_MAX) -> None:
        self._queue_max = queue_max
        self._listeners: dict[str, _Listener] = {}
        # Commits are numbered as dispatched; an open hold keeps back those numbered from its start.
        self._next_seq = 0
        self._holds: dict[int, int] = {}  # hold -> the number of the first commit it keeps back
        self._hold_keys = itertools.count()

    def add(self, name: str, listener: QueuedListener) -> None:
        """Call `listener` with the commits made since its last call, from a task of its own."""
        self._register(_Listener(name, queued=listener))

    def add_inline(self, name: str, listener: InlineListener) -> None:
        """Call `listener` with each commit as it is dispatched; it must be cheap and do no I/O."""
        self._register(_Listener(name, inline=listener))

    def _register(self, listener: _Listener) -> None:
        if listener.name in self._listeners:
            raise ValueError(f"an after-commit listener called '{listener.name}' is registered already")
        self._listeners[listener.name] = listener

    def dispatch(self, commit: Committed) -> None:
        """Hand one commit to every listener (the task writer's `on_commit`); never raises."""
        seq = self._next_seq
        self._next_seq += 1
        for listener in self._listeners.values():
            if listener.inline is not None:
                self._call_inline(listener, commit)
            else:
                self._enqueue(listener, seq, commit)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Queued listeners get the commits made while this is open only once it is closed."""
        key = next(self._hold_keys)
        self._holds[key] = self._next_seq
        try:
            yield
        finally:
            del self._holds[key]
            for listener in self._listeners.values():
                if listener.pending:
                    listener.wake.set()

    def views(self) -> list[ListenerView]:
        """Every listener's counts, in registration order (for `claw status`)."""
        return [listener.view() for listener in self._listeners.values()]

    async def run(self, stopping: asyncio.Event) -> None:
        """Serve the queued listeners until `stopping` is set, then let them drain their queues."""
        serving = [
            asyncio.create_task(self._serve(listener, stopping), name=f"listener-{listener.name}")
            for listener in self._listeners.values()
            if listener.queued is not None
        ]
        try:
            await stopping.wait()
            for listener in self._listeners.values():
                listener.wake.set()  # each waits on its own event only (cheaper than waiting on two)
            if serving:
                _, late = await asyncio.wait(serving, timeout=DRAIN_TIMEOUT_S)
                for task in late:
                    log.warning("listeners.drain_timeout", listener=task.get_name(), timeout_s=DRAIN_TIMEOUT_S)
        finally:
            for task in serving:
                task.cancel()
            await asyncio.gather(*serving, return_exceptions=True)

    def _call_inline(self, listener: _Listener, commit: Committed) -> None:
        assert listener.inline is not None
        listener.calls += 1
        try:
            listener.inline(commit)
        except Exception as exc:
            log.exception("listeners.failed", listener=listener.name, failures=listener.failures + 1)
            _count_failure(listener, exc)

    def _enqueue(self, listener: _Listener, seq: int, commit: Committed) -> None:
        if len(listener.pending) >= self._queue_max:
            listener.pending.popleft()
            listener.dropped += 1
            if not listener.overflowing:
                listener.overflowing = True
                log.warning(
                    "listeners.overflow", listener=listener.name, queue_max=self._queue_max, dropped=listener.dropped,
                    note="the listener is too far behind: the oldest commits are dropped for it",
                )  # fmt: skip
        listener.pending.append((seq, commit))
        listener.wake.set()

    def _take(self, listener: _Listener, *, everything: bool) -> list[Committed]:
        """Take the listener's commits that no open hold keeps back (`everything`: all of them)."""
        barrier = None if everything or not self._holds else min(self._holds.values())
        taken: list[Committed] = []
        pending = listener.pending
        while pending and (barrier is None or pending[0][0] < barrier):
            taken.append(pending.popleft()[1])
        return taken

    async def _serve(self, listener: _Listener, stopping: asyncio.Event) -> None:
        """Call a queued listener with what waits for it; return once stopping and its queue is empty."""
        assert listener.queued is not None
        while True:
            if not listener.pending:
                listener.overflowing = False
                if stopping.is_set():
                    return
            commits = self._take(listener, everything=stopping.is_set())
            if not commits:
                listener.wake.clear()
                if not stopping.is_set():
                    # `run` sets every wake once stopping is set.
                    await listener.wake.wait()
                continue
            listener.calls += 1
            try:
                await listener.queued(commits)
            except Exception as exc:
                log.exception("listeners.failed", listener=listener.name, failures=listener.failures + 1)
                _count_failure(listener, exc)


def _count_failure(listener: _Listener, exc: Exception) -> None:
    listener.failures += 1
    listener.last_error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
