"""The quarantine's API: listing the task events the coordinator could not decode or fold.

Events get there from the event intake (`coordinator/event_intake.py`); the rows are in the state
database (`storage/quarantine_store.py`). Served as `<prefix>.api.quarantine_list`.
"""

from __future__ import annotations

from common.api import ApiVerb, QuarantineListReply, QuarantineListRequest
from common.errors import InvalidInputError
from communication.codec import DecodeError, decode
from coordinator.api_server import Handler
from storage.quarantine_store import QuarantineStore


class QuarantineDesk:
    """Answers `claw quarantine list`."""

    def __init__(self, store: QuarantineStore) -> None:
        self._store = store

    def api_handlers(self) -> dict[str, Handler]:
        """verb -> handler, for the `ApiServer`."""
        return {ApiVerb.QUARANTINE_LIST: self.list}

    async def list(self, data: bytes) -> QuarantineListReply:
        """Newest first, optionally of one task."""
        try:
            request = decode(data or b"{}", QuarantineListRequest)
        except DecodeError as exc:
            raise InvalidInputError(str(exc).replace("cannot decode", "invalid request:", 1)) from None
        return QuarantineListReply(events=await self._store.newest(task_id=request.task_id, limit=request.limit))
