"""The quarantine's API: listing the task events the coordinator could not decode or fold.

Events get there from the event intake (`coordinator/event_intake.py`); the rows are in the state
database (`storage/quarantine_store.py`). Served as `<prefix>.api.quarantine_list`.
"""

from __future__ import annotations

from common import verbs
from common.api import QuarantineListReply, QuarantineListRequest
from coordinator.api_routes import serves
from storage.quarantine_store import QuarantineStore


class QuarantineDesk:
    """Answers `claw quarantine list`."""

    def __init__(self, store: QuarantineStore) -> None:
        self._store = store

    @serves(verbs.QUARANTINE_LIST)
    async def list(self, request: QuarantineListRequest) -> QuarantineListReply:
        """Newest first, optionally of one task."""
        return QuarantineListReply(events=await self._store.newest(task_id=request.task_id, limit=request.limit))
