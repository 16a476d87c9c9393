"""The live feed: an after-commit listener announcing on `<prefix>.feed.<task_id>` that a task's
event log grew (progress and log lines too, not only state changes), with the new rows' kinds.

The HTTP gateway's live views (SSE, WebSocket) wait on these before reading the new rows, so they
push progress as it is committed without polling each task. Plugged in through `FEATURES`
(coordinator/plugins.py); one message per task per commit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from common.event_kinds import EventKind
from common.log import get_logger
from common.models import TaskFeed
from communication.codec import encode
from communication.connection import NATS_ERRORS, NatsConnection
from storage.commits import Committed
from storage.records import EventRecord

if TYPE_CHECKING:
    from coordinator.service import Coordinator

log = get_logger("coordinator.live_feed")
# Rows under pseudo task ids (`cluster:alerts`, `node:<id>`, `skill:<name>`) are not tasks' feeds.
_PSEUDO = ":"


class _Percent(msgspec.Struct):
    percent: float | None = None


_percent_decoder = msgspec.json.Decoder(_Percent)


class LiveFeed:
    """Publishes a `TaskFeed` per task whose log grew in the commits (queued listener: it does I/O)."""

    def __init__(self, conn: NatsConnection) -> None:
        self._conn = conn

    async def on_commits(self, commits: Sequence[Committed]) -> None:
        """Announce each task these commits wrote rows for, once per task."""
        feeds: dict[str, TaskFeed] = {}
        for commit in commits:
            for event in commit.events:
                if _PSEUDO in event.task_id:
                    continue
                feeds[event.task_id] = _merge(feeds.get(event.task_id), event)
        nc, subjects = self._conn.nc, self._conn.subjects
        try:
            for feed in feeds.values():
                await nc.publish(subjects.feed(feed.task_id), encode(feed))
        except NATS_ERRORS as exc:
            # A hint: the gateway also reads the log every few seconds.
            log.warning("live_feed.failed", tasks=len(feeds), error=str(exc) or type(exc).__name__)


def _merge(previous: TaskFeed | None, event: EventRecord) -> TaskFeed:
    kinds = [*(previous.kinds if previous else []), str(event.kind)]
    state = previous.state if previous else None
    if event.to_state is not None:
        state = event.to_state
    percent = previous.percent if previous else None
    if event.kind == EventKind.PROGRESS and event.data:
        with contextlib.suppress(msgspec.DecodeError):
            percent = _percent_decoder.decode(event.data).percent
    return TaskFeed(task_id=event.task_id, kinds=kinds, at=event.at, state=state, percent=percent)


def register(c: Coordinator) -> None:
    """Add the live feed's listener."""
    c.listeners.add("live-feed", LiveFeed(c.conn).on_commits)
