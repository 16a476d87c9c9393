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

log = get_logger("worker.cancellation")

REMEMBERED_IDS = 50_000


class CancelledTasks:
    """The most recent cancelled task ids (bounded), and the callback that stops running ones."""

    def __init__(self, stop_running: Callable[[str, str], bool], capacity: int = REMEMBERED_IDS) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._stop_running = stop_running
        self._capacity = capacity

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._ids

    def add(self, task_id: str) -> None:
        """Remember `task_id` as cancelled (forgetting the oldest beyond capacity)."""
        self._ids[task_id] = None
        self._ids.move_to_end(task_id)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    async def on_broadcast(self, msg: Msg) -> None:
        """Subscription callback for `<prefix>.cancel.*`."""
        task_id = msg.subject.rsplit(".", 1)[-1]
        self.add(task_id)
        reason = msg.data.decode(errors="replace") or "cancelled"
        if self._stop_running(task_id, reason):
            log.info("task.cancel_requested", task_id=task_id, reason=reason)
