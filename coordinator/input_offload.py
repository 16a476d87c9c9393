"""At submit: an input that would make its task message too big for NATS goes to the artifact store.

The limit that matters is the server's max_payload (from the connection's INFO), counted over the
whole task message - the input, the envelope around it, and the headers (message id, trace
context) - not the input alone. An input that fits the submit request can still make a message that
does not, and nats-server answers such a publish by disconnecting the publisher. So each admitted
input is measured as the message it will be published as, and one that would not fit is stored
(content-addressed, as the CLI does for inputs over `artifacts.inline_max_bytes`) and travels as a
reference. Without a usable store the submit is refused with the sizes, before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable

from common.errors import ArtifactError, PayloadTooLargeError
from common.log import get_logger
from common.models import INPUT_ARTIFACT, ArtifactRef, Backoff
from communication.codec import encode
from communication.payload_limits import message_bytes
from communication.subjects import Header
from coordinator.event_folding import artifact_marker
from coordinator.task_wire import input_ref_of, task_message_of, task_msg_id
from storage.artifacts import ArtifactStore
from storage.records import TaskRecord

log = get_logger("coordinator.input_offload")

# A well-formed W3C traceparent, as long as every real one.
TRACEPARENT_SHAPE = "00-" + "0" * 32 + "-" + "0" * 16 + "-01"
# What a re-run (`#<series>`) or a repost (`~<nonce>`) may add to a message id.
MSG_ID_SUFFIX_ROOM = 24
# An input this much below max_payload fits whatever the envelope: no need to encode the message.
ENVELOPE_ROOM_BYTES = 8 * 1024


def task_message_bytes(record: TaskRecord, backoff: Backoff) -> int:
    """The size nats-server will count for the record's task message, with the largest headers."""
    headers = {
        Header.MSG_ID: task_msg_id(record) + "x" * MSG_ID_SUFFIX_ROOM,
        Header.TRACEPARENT: TRACEPARENT_SHAPE,
    }
    return message_bytes(encode(task_message_of(record, backoff)), headers)


class InputOffloader:
    """Moves inputs that would not fit a task message into the artifact store."""

    def __init__(self, store: ArtifactStore | None, backoff: Backoff, max_payload: Callable[[], int]) -> None:
        self._store = store
        self._backoff = backoff
        self._max_payload = max_payload

    async def offload_oversize(self, records: list[TaskRecord]) -> None:
        """Replace each oversize inline input by an artifact reference; raises if one cannot be."""
        max_payload = self._max_payload()
        for index, record in enumerate(records):
            if len(record.input) <= max_payload - ENVELOPE_ROOM_BYTES or input_ref_of(record.input) is not None:
                continue
            size = task_message_bytes(record, self._backoff)
            if size <= max_payload:
                continue
            where = f"task {index + 1}: " if len(records) > 1 else ""
            record.input = artifact_marker(await self._store_input(record, size, max_payload, where))
            log.info("submit.input_offloaded", task_id=record.task_id, message_bytes=size, max_payload=max_payload)

    async def _store_input(self, record: TaskRecord, size: int, max_payload: int, where: str) -> ArtifactRef:
        problem = (
            f"{where}the task message would be {size} bytes with its envelope and headers, over the NATS "
            f"server's max_payload of {max_payload} bytes"
        )
        if self._store is None:
            raise PayloadTooLargeError(f"{problem}, and this coordinator has no artifact store for it")
        try:
            stored = await self._store.put_bytes(record.input.encode(), "application/json")
        except ArtifactError as exc:
            raise PayloadTooLargeError(f"{problem}, and storing the input as an artifact failed: {exc}") from None
        return ArtifactRef(
            name=INPUT_ARTIFACT,
            sha256=stored.sha256,
            size=stored.size,
            content_type="application/json",
            backend=stored.backend,
            key=stored.key,
        )
