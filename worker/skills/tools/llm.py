"""The skill `llm.chat`: one chat completion from an OpenAI-compatible API.

It POSTs to `<tools.llm_base_url>/chat/completions` with the API key read from the environment
variable `tools.llm_api_key_env` (never from the task, never echoed: a server message that quotes it
has it masked). Headers: `tools.llm_extra_headers`, plus the input's `headers` (which may not
override those of the config, nor Authorization). Like http.request it connects only to public
addresses unless `tools.http_allow_private` lists the API's (netguard.py): a model server on the
worker's own machine or network must be listed there.

Failures carry their retry intent: 429 is retryable after the server's Retry-After (seconds or an
HTTP date); 408, 5xx, dropped connections and timeouts are retryable; any other 4xx is permanent
and quotes the server's error message.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import math
import os
import urllib.parse
import weakref
from typing import TYPE_CHECKING, Any

import msgspec

from common.clock import SYSTEM_CLOCK, Clock
from common.config import ToolSettings
from common.errors import ConfigError, InvalidInputError, PermanentError, RetryableError, ToolTimeoutError
from communication.response_cache import PARAMS, cache_key
from worker.context import TaskContext
from worker.skills import Skill
from worker.skills.tools import inputs
from worker.skills.tools.addresses import AddressPolicy
from worker.skills.tools.http import read_capped, transport_error

if TYPE_CHECKING:
    import httpx

SKILL = "llm.chat"
# OpenAI request fields passed through as they are; the server checks their values.
PASSED_THROUGH = PARAMS
# `fallback_models` is flow control's (docs/Flow_control.md): the coordinator picks the model.
# `cache_ttl_s`: the response cache (opt-in): an equal call within that many seconds is answered
# from it without an API call.
FIELDS = ("model", "messages", "headers", "timeout_s", "fallback_models", "cache_ttl_s", *PASSED_THROUGH)
REFUSED_HEADERS = ("authorization", "host", "content-length", "content-type")
SERVER_MESSAGE_MAX_CHARS = 500
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


class LlmTool:
    """The llm.chat handler; it closes over the tool settings and a clock (for Retry-After dates)."""

    def __init__(self, settings: ToolSettings, clock: Clock = SYSTEM_CLOCK) -> None:
        try:
            url = urllib.parse.urlsplit(settings.llm_base_url)
            valid = url.scheme in ("http", "https") and bool(url.hostname)
        except ValueError:  # a malformed port or IPv6 address
            valid = False
        if not valid:
            raise ConfigError(f"tools.llm_base_url: {settings.llm_base_url!r} must be an http:// or https:// URL")
        if any(name.lower() == "authorization" for name in settings.llm_extra_headers):
            raise ConfigError(
                "tools.llm_extra_headers may not set Authorization: the key comes from tools.llm_api_key_env"
            )
        self._settings = settings
        self._clock = clock
        self._url = settings.llm_base_url.rstrip("/") + "/chat/completions"
        self._policy = AddressPolicy.from_entries(settings.http_allow_private)
        # One HTTP client (and its connection pool) per event loop, reused by every call.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        _TOOLS.add(self)
        # Imported now, not at the first call: a first call slowed by ~0.2 s of imports reaches the
        # API later than flow control counted it (docs/Flow_control.md, "Rates").
        import httpx  # noqa: F401

        import worker.skills.tools.netguard  # noqa: F401

    def _client(self) -> httpx.AsyncClient:
        from worker.skills.tools.netguard import guarded_client

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = self._clients[loop] = guarded_client(self._policy, SKILL, timeout_s=self._settings.llm_timeout_s)
        return client

    async def aclose(self) -> None:
        """Close this loop's HTTP client (the worker's shutdown; a later call opens a new one)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def skills(self) -> list[Skill]:
        """The one LLM skill."""
        return [Skill(SKILL, self.chat, "a chat completion: {'messages': [{'role': 'user', 'content': ...}]}")]

    async def chat(self, ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        """{messages, model?, temperature?, max_tokens?, ..., headers?, timeout_s?} -> {message,
        usage, model, finish_reason}."""
        import httpx  # on first use, as in http.py

        inputs.check_fields(SKILL, input, FIELDS)
        # A fallback chosen by flow control (the first choice's key cooled down) names its model.
        model = ctx.flow_model or inputs.optional_string(SKILL, input, "model") or self._settings.llm_model
        if ctx.flow_model == "default" and "model" not in input:
            model = self._settings.llm_model
        body = {"model": model, "messages": _messages(input), **{k: input[k] for k in PASSED_THROUGH if k in input}}
        cache = ctx.response_cache(_cache_ttl(input))
        digest = ""
        if cache is not None:
            params = {k: input[k] for k in PASSED_THROUGH if k in input}
            digest = cache_key(str(model), body["messages"], params, ctx.tenant)
            cached = await cache[0].get(digest)
            if cached is not None:
                ctx.log(f"response cache hit ({digest[:12]}): no API call")
                ctx.report_usage(0, 0, model=str(model), cache_hit=True)
                result: dict[str, Any] = msgspec.json.decode(cached)
                return result
        extra = inputs.headers(SKILL, input, "headers", REFUSED_HEADERS)
        timeout_s = min(self._settings.llm_timeout_s, inputs.timeout_s(SKILL, input) or math.inf)
        token = self._token()
        headers = self._headers(extra, token)
        call_started_at = self._clock.now()
        try:
            async with (
                asyncio.timeout(timeout_s),
                self._client().stream("POST", self._url, json=body, headers=headers, timeout=timeout_s) as response,
            ):
                data, truncated = await read_capped(response, self._settings.http_max_response_bytes)
        except (TimeoutError, httpx.TimeoutException):
            raise ToolTimeoutError(f"{SKILL}: the model API gave no answer within {timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise transport_error(SKILL, "the request to the model API", exc) from None
        if not 200 <= response.status_code < 300:
            raise self._refusal(response, data, token)
        if truncated:
            raise PermanentError(
                f"{SKILL}: the answer is larger than tools.http_max_response_bytes "
                f"({self._settings.http_max_response_bytes} bytes)"
            )
        completion = _completion(data, model)
        usage = completion["usage"]
        ctx.report_usage(
            _count(usage.get("prompt_tokens")),
            _count(usage.get("completion_tokens")),
            model=str(model),
            call_started_at=call_started_at,
        )
        if cache is not None:
            # The coordinator writes the entry (workers may only read the bucket): it recomputes the
            # key from this task's stored input and tenant, for the node holding this attempt.
            await ctx.report_cache(str(model), completion, cache[1])
        return completion

    def _token(self) -> str:
        name = self._settings.llm_api_key_env
        token = os.environ.get(name, "").strip()
        if not token:
            raise PermanentError(
                f"{SKILL}: no API key: set the environment variable {name} on the worker (tools.llm_api_key_env)"
            )
        return token

    def _headers(self, extra: dict[str, str], token: str) -> dict[str, str]:
        configured = {name.lower(): value for name, value in self._settings.llm_extra_headers.items()}
        merged = {name.lower(): value for name, value in extra.items()} | configured
        return merged | {"authorization": f"Bearer {token}"}

    def _refusal(self, response: httpx.Response, data: bytes, token: str) -> RetryableError | PermanentError:
        status = response.status_code
        message = f"{SKILL}: the model API answered HTTP {status}: {_server_message(data).replace(token, '***')}"
        retry_after_s = parse_retry_after(response.headers.get("retry-after"), self._clock.now())
        if status in (408, 429) or status >= 500:
            return RetryableError(message, retry_after_s=retry_after_s)
        return PermanentError(message)


# Every LlmTool (skills of their own build one too: examples/skills/writing), for the worker's shutdown.
_TOOLS: weakref.WeakSet[LlmTool] = weakref.WeakSet()


async def close_clients() -> None:
    """Close the HTTP clients every LlmTool opened on this event loop (a worker stopping)."""
    for tool in list(_TOOLS):
        await tool.aclose()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        # HTTP dates are in GMT; "-0000" parses as a naive datetime.
        seconds = (when if when.tzinfo else when.replace(tzinfo=datetime.UTC)).timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _cache_ttl(input: dict[str, Any]) -> float | None:
    value = input.get("cache_ttl_s")
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise InvalidInputError(f"{SKILL}: 'cache_ttl_s' must be a number of seconds (0: no cache)")
    return float(value)


def _count(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _messages(input: dict[str, Any]) -> list[dict[str, Any]]:
    messages = input.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidInputError(f"{SKILL}: 'messages' must be a non-empty list of {{role, content}} objects")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidInputError(f"{SKILL}: 'messages'[{index}] must be an object with a string 'role'")
        if not isinstance(message.get("content"), str | list | None):
            raise InvalidInputError(f"{SKILL}: 'messages'[{index}].content must be a string or a list of parts")
    return messages


def _server_message(data: bytes) -> str:
    """The `error.message` of an OpenAI-style error body, else the start of the body."""
    try:
        body = msgspec.json.decode(data)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:SERVER_MESSAGE_MAX_CHARS]
        for candidate in (error, body.get("message"), body.get("detail")):
            if isinstance(candidate, str):
                return candidate[:SERVER_MESSAGE_MAX_CHARS]
    text = data.decode("utf-8", errors="replace").strip()
    return text[:SERVER_MESSAGE_MAX_CHARS] or "(no message)"


def _completion(data: bytes, requested_model: str) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(data)
        choice = body["choices"][0]
        message = choice["message"]
        result_message = {"role": message.get("role", "assistant"), "content": message.get("content")}
    except (msgspec.DecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise PermanentError(f"{SKILL}: the model API's answer is not a chat completion") from None
    if message.get("tool_calls"):
        result_message["tool_calls"] = message["tool_calls"]
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return {
        "message": result_message,
        "usage": {name: usage.get(name) for name in USAGE_FIELDS},
        "model": body.get("model") or requested_model,
        "finish_reason": choice.get("finish_reason"),
    }
