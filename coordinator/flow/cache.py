"""The response cache's only writer (issue 11 / 12 item 6): the verb `cache_put`.

Workers may read the cache bucket but not write it: with write access, any worker credential could
put a made-up answer under a key it computed (the key is a digest of public parts) and have it
served to every equal call, any tenant's, for the TTL. Instead the worker that made the real call
reports the answer for the task attempt it holds; this desk

- checks that the reporting node (its credentials' identity, on an authenticated bus) holds that
  attempt of that task, an unfinished llm.chat task (waiting a little for the attempt's `started`
  event to be folded: the report may overtake it);
- checks the model the call used is the task's own (its `model`, else the coordinator's
  `tools.llm_model`) or one of its `fallback_models`;
- recomputes the key from the task's stored input and tenant, and writes the entry.

So an entry can only ever be the answer reported by the node that ran that exact call for a real task.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NoReturn

import msgspec

from common import verbs
from common.api import CachePutReply, CachePutRequest
from common.errors import InvalidInputError, PermissionDeniedError
from common.flow import FALLBACK_FIELD, LLM_SKILL
from common.ids import shown_id
from common.log import get_logger
from common.states import TERMINAL_STATES, TaskState
from communication.response_cache import MAX_TTL_S, ResponseCache, input_key
from coordinator.api_routes import serves
from coordinator.task_book import TaskBook
from storage.records import TaskRecord

log = get_logger("coordinator.flow")

# How long a report waits for its attempt's `started` to be folded (it is published before the report,
# on the events stream, which the coordinator folds in batches).
ATTEMPT_WAIT_S = 10.0
ATTEMPT_POLL_S = 0.05


class CacheDesk:
    """Serves `cache_put`."""

    def __init__(self, book: TaskBook, cache: ResponseCache, default_model: str) -> None:
        self._book = book
        self._cache = cache
        self._default_model = default_model

    @serves(verbs.CACHE_PUT)
    async def cache_put(self, request: CachePutRequest) -> CachePutReply:
        """Write the answer a worker reports for the attempt it holds, under the key computed here."""
        record = await self._held(request)
        input = _input(record)
        if input is None:
            return CachePutReply(stored=False)  # an input kept as an artifact (too large): not cached
        allowed = [input.get("model") or self._default_model]
        fallbacks = input.get(FALLBACK_FIELD)
        if isinstance(fallbacks, list):
            allowed += [m for m in fallbacks if isinstance(m, str) and m]
        if request.model not in allowed:
            self._refuse(request, f"model {request.model[:64]!r} is neither the task's nor one of its fallbacks")
        ttl_s = min(request.ttl_s, MAX_TTL_S)
        asked = input.get("cache_ttl_s")
        if isinstance(asked, int | float) and not isinstance(asked, bool):
            if asked <= 0:
                return CachePutReply(stored=False)  # the task said: no cache
            ttl_s = min(float(asked), MAX_TTL_S)
        key = input_key(request.model, input, record.tenant)
        await self._cache.put(key, request.result, ttl_s)
        log.info("flow.cache_put", task_id=record.task_id, node_id=request.node_id, key=key[:12], ttl_s=ttl_s)
        return CachePutReply(stored=True, key=key)

    async def _held(self, request: CachePutRequest) -> TaskRecord:
        """The task's record once it shows `request.attempt` running on the reporting node."""
        deadline = time.monotonic() + ATTEMPT_WAIT_S
        while True:
            record = self._book.get(request.task_id)
            if record is None or record.state in TERMINAL_STATES:
                self._refuse(request, "the task is not running")
            if record.skill != LLM_SKILL:
                self._refuse(request, f"only {LLM_SKILL} answers are cached")
            if request.attempt <= record.fenced_through:
                self._refuse(request, f"attempt {request.attempt} was declared lost")
            if record.attempts >= request.attempt or time.monotonic() >= deadline:
                break
            await asyncio.sleep(ATTEMPT_POLL_S)  # its `started` is on the way: fold it first
        held = record.state == TaskState.RUNNING and record.attempts == request.attempt
        if not held or record.node_id != request.node_id:
            self._refuse(request, f"node {request.node_id[:64]!r} does not hold attempt {request.attempt}")
        return record

    def _refuse(self, request: CachePutRequest, why: str) -> NoReturn:
        log.warning("security.cache_put_refused", task_id=request.task_id[:32], node_id=request.node_id[:64],
                    attempt=request.attempt, reason=why)  # fmt: skip
        raise PermissionDeniedError(f"cache_put for task {shown_id(request.task_id)}: {why}")


def _input(record: TaskRecord) -> dict[str, Any] | None:
    try:
        value = msgspec.json.decode(record.input)
    except msgspec.DecodeError:
        raise InvalidInputError(f"task {shown_id(record.task_id)}: its stored input is not JSON") from None
    return value if isinstance(value, dict) and "messages" in value else None
