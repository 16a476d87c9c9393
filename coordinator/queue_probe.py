"""What waits in JetStream: the depth of each (skill, priority) consumer, and the dead-letter count.

Read by `claw status` on request and by the metrics refresh on the maintenance loop - never per
scrape - with one JetStream API call per consumer and one for the DLQ stream.
"""

from __future__ import annotations

from collections.abc import Iterable

from nats.js.errors import NotFoundError

from common.models import QueueDepth
from common.states import PRIORITIES
from communication.connection import NatsConnection


class QueueProbe:
    """Reads consumer and stream state from JetStream."""

    def __init__(self, conn: NatsConnection) -> None:
        self._conn = conn

    async def depths(self, skills: Iterable[str]) -> list[QueueDepth]:
        """Per (skill, priority) consumer that exists: messages waiting, and delivered but unacked."""
        subjects = self._conn.subjects
        depths = []
        for skill in sorted(skills):
            for priority in PRIORITIES:
                try:
                    info = await self._conn.js.consumer_info(
                        subjects.tasks_stream, subjects.task_consumer(skill, priority)
                    )
                except NotFoundError:
                    continue  # no worker ever pulled this priority
                depths.append(
                    QueueDepth(
                        skill=skill,
                        priority=priority,
                        pending=info.num_pending or 0,
                        ack_pending=info.num_ack_pending or 0,
                    )
                )
        return depths

    async def dead_letters(self) -> int:
        """Messages in the dead-letter stream."""
        info = await self._conn.js.stream_info(self._conn.subjects.dlq_stream)
        return info.state.messages
