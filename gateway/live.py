"""Live views: a task's events as Server-Sent Events, and a WebSocket of several subscriptions.

Fed by the coordinator's broadcasts: `<prefix>.feed.<task_id>` (coordinator/live_feed.py) says a
task's event log grew. The hub keeps one subscription for the whole gateway, while anyone watches
(nobody watching, a gateway under a stream of submits would decode two hints per submit for
nothing: 13 % of its time); per watched task a
`TaskChannel` counts the hints (`version`) and reads the task's log once per hint however many
watch it (500 SSE clients of one task cost one read per change). The log is the truth and each row
has its id: a watcher sends the rows after the last id it sent, in order, so a client that resumes
with `Last-Event-ID` gets every row once, none lost, none repeated. Hints may be missed (core NATS):
each watcher reads again after `RECHECK_S` of silence, which also sends the keep-alive.

The overview (`ClusterStatus`) is read once per `OVERVIEW_INTERVAL_S` while anyone subscribes,
sooner after activity (at most once per `OVERVIEW_MIN_INTERVAL_S`), and shared by all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from common import api, verbs
from common.errors import ClawError
from common.log import get_logger
from common.models import EventView, TaskFeed, TaskView
from common.states import TERMINAL_STATES
from communication.api_client import ClawClient
from communication.codec import DecodeError, decode

log = get_logger("gateway.live")

RECHECK_S = 5.0
OVERVIEW_INTERVAL_S = 5.0
OVERVIEW_MIN_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class _Read:
    """One read of a task's view: the hint count and the time it started at."""

    version: int
    started: float
    view: asyncio.Future[TaskView]

    def fresh(self, version: int, not_before: float) -> bool:
        """Whether it started after hint `version` and not before `not_before`."""
        return self.version >= version and self.started >= not_before


@dataclass(eq=False)
class TaskChannel:
    """The watchers of one task: a hint counter, a wake-up, and the latest read shared by them."""

    task_id: str
    watchers: int = 0
    version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    last: _Read | None = None

    def hint(self) -> None:
        """The log grew: wake every watcher (each waits on the event it saw, then on a fresh one)."""
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()


class LiveHub:
    """The gateway's live feed: one NATS subscription, per-task channels, the shared overview."""

    def __init__(self, client: ClawClient) -> None:
        self._client = client
        self._channels: dict[str, TaskChannel] = {}
        self._sub: Subscription | None = None
        # Who needs the feed now (watchers, every-task and overview listeners); subscribed while any.
        self._feed_users = 0
        self._feed_lock = asyncio.Lock()
        # Subscribers to every task's feed (the tasks list) and to the overview: callbacks.
        self._task_listeners: set[Callable[[TaskFeed], None]] = set()
        self._overview_listeners: set[Callable[[api.StatusReply], None]] = set()
        self._activity = asyncio.Event()
        self._closed = False
        self._overview_task: asyncio.Task[None] | None = None
        # Reads of tasks' views in flight, shared by watchers; cancelled on close.
        self._reads: set[asyncio.Task[TaskView]] = set()
        self.overview: api.StatusReply | None = None

    async def close(self) -> None:
        """Unsubscribe and stop the overview reader; wake every watcher so it ends."""
        self._closed = True
        for channel in self._channels.values():
            channel.hint()
        async with self._feed_lock:
            await self._unsubscribe()
        tasks = [*self._reads, *([self._overview_task] if self._overview_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._overview_task = None

    @contextlib.asynccontextmanager
    async def _feed(self) -> AsyncIterator[None]:
        """The feed of every task, subscribed while in the block (before it yields: no hint of what
        the block reads next is missed)."""
        self._feed_users += 1
        try:
            async with self._feed_lock:
                if self._sub is None and not self._closed:
                    conn = self._client.conn
                    self._sub = await conn.nc.subscribe(conn.subjects.feed_all, cb=self._on_feed)
            yield
        finally:
            self._feed_users -= 1
            async with self._feed_lock:  # a user that came meanwhile keeps it
                if self._feed_users == 0:
                    await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # the connection may be closing already
                await sub.unsubscribe()

    async def _on_feed(self, msg: Msg) -> None:
        try:
            feed = decode(msg.data, TaskFeed)
        except DecodeError:
            return  # a hint only
        channel = self._channels.get(feed.task_id)
        if channel is not None:
            channel.hint()
        for listener in list(self._task_listeners):
            listener(feed)
        self._activity.set()

    # --- one task's events --------------------------------------------------------------------

    async def task_events(self, task_id: str, after_id: int) -> AsyncIterator[EventView | TaskView]:
        """Every event of `task_id` with an id above `after_id`, in order, live until the task ended;
        then its final view. Yields the current view also after `RECHECK_S` of silence (a keep-alive,
        and a read in case a hint was missed)."""
        async with self._feed():
            channel = self._channels.get(task_id)
            if channel is None:
                channel = self._channels[task_id] = TaskChannel(task_id)
            channel.watchers += 1
            loop = asyncio.get_running_loop()
            try:
                version, not_before = channel.version, 0.0
                while True:
                    changed = channel.changed
                    view = await self._read(channel, version, not_before)
                    for event in view.events:
                        if event.id > after_id:
                            yield event
                            after_id = event.id
                    if view.state in TERMINAL_STATES:
                        yield view
                        return
                    try:
                        async with asyncio.timeout(RECHECK_S):
                            await changed.wait()
                    except TimeoutError:
                        # Watchers that time out about now share one read.
                        not_before = loop.time() - RECHECK_S / 2
                        yield view
                    if self._closed:
                        return
                    version = channel.version
            finally:
                channel.watchers -= 1
                if channel.watchers == 0 and self._channels.get(task_id) is channel:
                    del self._channels[task_id]

    async def _read(self, channel: TaskChannel, version: int, not_before: float) -> TaskView:
        """The task's view, from a read started after hint `version` and not before `not_before`:
        the latest read when it is that fresh (shared by every watcher), else a new one."""
        last = channel.last
        if last is None or not last.fresh(version, not_before) or _failed(last.view):
            loop = asyncio.get_running_loop()
            task = loop.create_task(self._get(channel.task_id), name=f"gateway-read-{channel.task_id}")
            self._reads.add(task)
            task.add_done_callback(self._read_done)
            last = channel.last = _Read(channel.version, loop.time(), task)
        return await asyncio.shield(last.view)

    def _read_done(self, task: asyncio.Future[TaskView]) -> None:
        self._reads.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: every watcher may have left before it ended

    async def _get(self, task_id: str) -> TaskView:
        return await self._client.call(verbs.TASK_GET, api.TaskGetRequest(task_id=task_id))

    # --- every task, and the overview ----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def every_task(self, listener: Callable[[TaskFeed], None]) -> AsyncIterator[None]:
        """Call `listener` with every task's feed while in the block."""
        async with self._feed():
            self._task_listeners.add(listener)
            try:
                yield
            finally:
                self._task_listeners.discard(listener)

    @contextlib.asynccontextmanager
    async def overview_updates(self, listener: Callable[[api.StatusReply], None]) -> AsyncIterator[None]:
        """Call `listener` with each fresh overview while in the block (the current one at once); the
        feed's activity makes the next read sooner."""
        async with self._feed():
            self._overview_listeners.add(listener)
            if self._overview_task is None or self._overview_task.done():
                self._overview_task = asyncio.create_task(self._read_overview(), name="gateway-overview")
            if self.overview is not None:
                listener(self.overview)
            try:
                yield
            finally:
                self._overview_listeners.discard(listener)

    async def _read_overview(self) -> None:
        """Read the status while anyone listens: every interval, sooner after activity."""
        while self._overview_listeners:
            try:
                self.overview = await self._client.call(verbs.STATUS, api.StatusRequest())
            except ClawError as exc:
                log.warning("gateway.overview_failed", error=str(exc))
            else:
                for listener in list(self._overview_listeners):
                    listener(self.overview)
            await asyncio.sleep(OVERVIEW_MIN_INTERVAL_S)
            self._activity.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OVERVIEW_INTERVAL_S - OVERVIEW_MIN_INTERVAL_S):
                    await self._activity.wait()


def _failed(read: asyncio.Future[TaskView]) -> bool:
    return read.done() and (read.cancelled() or read.exception() is not None)
