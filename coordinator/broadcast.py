"""The broadcast of task states: an after-commit listener publishing `<prefix>.updates.<task_id>`.

Every task whose state a commit changed is announced with its state as committed (`TaskUpdate`),
whoever committed it: event intake, the submit pipeline, a cancel, an approval, a re-run. Clients
(`claw submit --wait`, `claw task watch`) wait on these instead of polling; they are a hint (core
NATS, may be missed, and a listener that fell behind sends each task's latest state only), the
database stays the truth.

One exception: the commit that admits a task under an id the coordinator made itself
(`Committed.fresh_ids`) announces nothing for it. Nobody can be listening yet: the id is a fresh
ULID that its client learns only from the submit's reply, which carries the same state or a later
one. A task whose id the client chose is announced from its admission on (the client may subscribe
first). This saves one message per submitted task (tests/integration/test_per_task_messages.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from common.log import get_logger
from common.models import TaskUpdate
from communication.codec import encode
from communication.connection import NATS_ERRORS, NatsConnection
from storage.commits import Committed, TaskImage

log = get_logger("coordinator.broadcast")


class TaskBroadcast:
    """Publishes each committed state change (queued listener: it does I/O)."""

    def __init__(self, conn: NatsConnection) -> None:
        self._conn = conn

    async def on_commits(self, commits: Sequence[Committed]) -> None:
        """Publish the latest committed state of each task these commits moved."""
        latest: dict[str, TaskImage] = {}
        for commit in commits:
            fresh = commit.fresh_ids
            for task in commit.changed_states():
                if task.task_id not in fresh:
                    latest[task.task_id] = task
        if not latest:
            return
        nc, subjects = self._conn.nc, self._conn.subjects
        try:
            for task in latest.values():
                update = TaskUpdate(task_id=task.task_id, state=task.state, attempt=task.attempts, at=task.updated_at)
                await nc.publish(subjects.updates(task.task_id), encode(update))
        except NATS_ERRORS as exc:
            # A hint: whoever waits also polls the database.
            log.warning("broadcast.failed", tasks=len(latest), error=str(exc) or type(exc).__name__)
