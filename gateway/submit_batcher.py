"""Submits that arrive together leave together: one `submit` request per submitter per batch.

Under load the coordinator's cost is per request more than per task, so HTTP submits in flight at
the same moment are sent as one `SubmitRequest` (of the same submitter: the request names one).
A batch is whatever waits when one of `SLOTS` request slots frees up, so a lone submit goes out at
once and a crowd goes out in few requests. A submit request is all or nothing: when a batch is
refused (a bad task, a full queue), nothing of it was admitted, and each caller's own tasks are sent
again alone, so one caller's bad task never fails another's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgspec

from common import api, verbs
from common.errors import ClawError
from communication.api_client import ActingFor, ClawClient

# Submit requests in flight at once (the coordinator's admission is one queue anyway).
SLOTS = 4
# Tasks in one batched request at most (a request's size is bounded by NATS's max_payload too).
MAX_BATCH_TASKS = 500


@dataclass(eq=False)
class _Waiting:
    request: api.SubmitRequest
    acting: ActingFor
    reply: asyncio.Future[api.SubmitReply] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SubmitBatcher:
    """Coalesces concurrent submits of each submitter into as few requests as the slots allow."""

    def __init__(self, client: ClawClient, *, slots: int = SLOTS) -> None:
        self._client = client
        self._slots = asyncio.Semaphore(slots)
        # By the principal acting (one request has one submitter and one set of roles).
        self._waiting: dict[ActingFor, list[_Waiting]] = {}
        self._senders: set[asyncio.Task[None]] = set()

    async def submit(self, request: api.SubmitRequest, acting: ActingFor) -> api.SubmitReply:
        """Submit `request`'s tasks (all or none) for `acting`, batched with others in flight."""
        waiting = _Waiting(request, acting)
        waiting.reply.add_done_callback(_retrieve)  # a caller that went away leaves no unread error
        queue = self._waiting.setdefault(acting, [])
        queue.append(waiting)
        if len(queue) == 1:
            sender = asyncio.create_task(self._send(acting), name="gateway-submit")
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        # Not shielded: a caller that goes away cancels its own future only, which the sender skips.
        return await waiting.reply

    async def close(self) -> None:
        """Let the batches on their way finish (their callers wait for them)."""
        if self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)

    async def _send(self, acting: ActingFor) -> None:
        async with self._slots:
            batch = self._take(acting)
            if not batch:
                return
            if len(batch) == 1:
                await self._send_alone(batch[0])
                return
            tasks = [task for waiting in batch for task in waiting.request.tasks]
            first = batch[0].request
            merged = msgspec.structs.replace(first, tasks=tasks)
            try:
                reply = await self._client.call(verbs.SUBMIT, merged, acting_for=acting)
            except ClawError:
                # Nothing of the batch was admitted: each caller's request on its own.
                for waiting in batch:
                    await self._send_alone(waiting)
                return
            except BaseException as exc:
                for waiting in batch:
                    _fail(waiting, exc)
                raise
            at = 0
            for waiting in batch:
                count = len(waiting.request.tasks)
                if not waiting.reply.done():
                    waiting.reply.set_result(api.SubmitReply(results=reply.results[at : at + count]))
                at += count

    def _take(self, acting: ActingFor) -> list[_Waiting]:
        """What waits for `acting`, up to `MAX_BATCH_TASKS` tasks; a sender for the rest."""
        queue = self._waiting.pop(acting, [])
        batch: list[_Waiting] = []
        count = 0
        while queue and (not batch or count + len(queue[0].request.tasks) <= MAX_BATCH_TASKS):
            waiting = queue.pop(0)
            batch.append(waiting)
            count += len(waiting.request.tasks)
        if queue:
            self._waiting[acting] = queue
            sender = asyncio.create_task(self._send(acting), name="gateway-submit")
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return batch

    async def _send_alone(self, waiting: _Waiting) -> None:
        try:
            reply = await self._client.call(verbs.SUBMIT, waiting.request, acting_for=waiting.acting)
        except BaseException as exc:
            _fail(waiting, exc)
            if not isinstance(exc, Exception):
                raise
            return
        if not waiting.reply.done():
            waiting.reply.set_result(reply)


def _retrieve(future: asyncio.Future[api.SubmitReply]) -> None:
    if not future.cancelled():
        future.exception()


def _fail(waiting: _Waiting, exc: BaseException) -> None:
    if not waiting.reply.done():
        waiting.reply.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
