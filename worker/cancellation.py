"""Cancellation on the worker: `<prefix>.cancel.<task_id>` broadcasts from the coordinator.

A running attempt of a cancelled task is stopped at once (its handler is cancelled, a subprocess it
started is killed by the skill's own clean-up) and reports `cancelled`. Ids are remembered for a while
so that a cancelled task fetched a moment later is dropped without running.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from nats.aio.msg import Msg

from common.log import get_logger
from common.models import CancelNotice
from communication.codec import DecodeError, decode

log = get_logger("worker.cancellation")

REMEMBERED_IDS = 50_000


class CancelledTasks:
    """The most recent cancelled task ids (bounded), and the callback that stops running ones."""

    def __init__(self, stop_running: Callable[[str, str], bool], capacity: int = REMEMBERED_IDS) -> None:
        self._series: OrderedDict[str, int] = OrderedDict()
        self._stop_running = stop_running
        self._capacity = capacity

    def covers(self, task_id: str, series: int) -> bool:
        """Whether series `series` (attempt offset) of `task_id` was cancelled."""
        cancelled = self._series.get(task_id)
        return cancelled is not None and series <= cancelled

    def add(self, task_id: str, series: int) -> None:
        """Remember a cancelled series (forgetting the oldest ids beyond capacity)."""
        self._series[task_id] = max(series, self._series.get(task_id, series))
        self._series.move_to_end(task_id)
        while len(self._series) > self._capacity:
            self._series.popitem(last=False)

    async def on_broadcast(self, msg: Msg) -> None:
        """Subscription callback for `<prefix>.cancel.*`."""
        task_id = msg.subject.rsplit(".", 1)[-1]
        try:
            notice = decode(msg.data, CancelNotice)
        except DecodeError as exc:
            log.warning("task.bad_cancel_notice", task_id=task_id, error=str(exc))
            return
        self.add(task_id, notice.series)
        if self._stop_running(task_id, notice.reason):
            log.info("task.cancel_requested", task_id=task_id, reason=notice.reason)
