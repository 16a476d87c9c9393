"""Flow control's response cache: identical LLM calls within a TTL answered from a KV bucket.

Opt-in per task (llm.chat's input `cache_ttl_s`) or per skill (`flow.cache_ttl_s` of the worker's
config). The key is the sha256 of the call's model, messages, parameters and tenant; the value holds
the answer and when it expires (the bucket's own TTL, `MAX_TTL_S`, bounds every entry).

Workers only read it: their credentials may not publish on `$KV.<bucket>.>` (a worker that could
would put a made-up answer under a key it computed, served to every equal call, any tenant's, for
the TTL). The worker that made the real call reports the answer (verb `cache_put`); the coordinator
checks that the reporting node holds that task's attempt, recomputes the key from the task's stored
input and tenant, and writes the entry. The coordinator also reports and clears it (`claw cache stats|clear`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from nats.js import api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from common.clock import Clock
from common.config import JetStreamSettings
from communication.connection import NATS_ERRORS, NatsConnection
from communication.topology import replicas_for

MAX_TTL_S = 86400.0
# llm.chat's input fields that are the call's parameters (part of the key; the OpenAI request fields
# passed through as they are).
PARAMS = (
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "top_p",
    "stop",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "logit_bias",
    "user",
    "reasoning_effort",
    "metadata",
)


class CachedAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """One cached answer."""

    expires_at: float
    result: msgspec.Raw


def cache_key(model: str, messages: Any, params: dict[str, Any], tenant: str) -> str:
    """The digest naming a call: equal calls (model, messages, parameters, tenant) share it."""
    canonical = msgspec.json.encode({"model": model, "messages": messages, "params": params, "tenant": tenant},
                                    order="sorted")  # fmt: skip
    return hashlib.sha256(canonical).hexdigest()


def input_key(model: str, input: dict[str, Any], tenant: str) -> str:
    """The key of an llm.chat call made with `model` for a task's `input` (its messages and PARAMS)."""
    return cache_key(model, input.get("messages"), {k: input[k] for k in PARAMS if k in input}, tenant)


class ResponseCache:
    """The cache bucket `<prefix>_flow_cache`, opened (or created) on first use."""

    def __init__(self, conn: NatsConnection, clock: Clock, *, writer: JetStreamSettings | None = None) -> None:
        """`writer`: the coordinator's JetStream settings when this process writes (and so creates the
        bucket, with the replicas every other bucket gets); a worker, which only reads, passes none."""
        self._conn = conn
        self._clock = clock
        # Only the coordinator writes (and creates the bucket); a worker's credentials can only read.
        self._writer = writer
        self._kv: KeyValue | None = None

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return f"{self._conn.subjects.prefix}_flow_cache"

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self._conn.js.key_value(self.bucket)
            except BucketNotFoundError:
                if self._writer is None:
                    raise  # the coordinator creates it with the first entry: until then, every get misses
                self._kv = await self._conn.js.create_key_value(
                    bucket=self.bucket,
                    description="flow control's response cache (claw cache stats|clear)",
                    history=1,
                    ttl=MAX_TTL_S,
                    storage=api.StorageType.FILE,
                    # One copy would lose every cached answer with one server of a NATS cluster.
                    replicas=replicas_for(self._writer, self._conn),
                )
        return self._kv

    async def get(self, key: str) -> bytes | None:
        """The cached result for `key`, if any and not expired (a cache that cannot be read is a miss)."""
        try:
            entry = await (await self._bucket()).get(key)
        except (KeyNotFoundError, BucketNotFoundError):
            return None
        except NATS_ERRORS:
            return None
        if entry.value is None:
            return None
        try:
            answer = msgspec.json.decode(entry.value, type=CachedAnswer)
        except msgspec.DecodeError:
            return None
        return bytes(answer.result) if answer.expires_at > self._clock.now() else None

    async def put(self, key: str, result: Any, ttl_s: float) -> None:
        """Store an answer for `ttl_s` (at most MAX_TTL_S); a failed write only costs the next hit.
        The coordinator's only (`writer=True`): the server refuses a worker's writes."""
        expires = self._clock.now() + min(ttl_s, MAX_TTL_S)
        value = msgspec.json.encode({"expires_at": expires, "result": result})
        try:
            await (await self._bucket()).put(key, value)
        except NATS_ERRORS:
            return

    async def stats(self) -> tuple[int, int]:
        """(entries, bytes) in the bucket."""
        try:
            info = await self._conn.js.stream_info(f"KV_{self.bucket}")
        except NATS_ERRORS:
            return 0, 0
        return info.state.messages, info.state.bytes

    async def clear(self) -> int:
        """Drop every entry; how many there were."""
        entries, _ = await self.stats()
        if entries:
            await self._conn.js.purge_stream(f"KV_{self.bucket}")
        return entries
