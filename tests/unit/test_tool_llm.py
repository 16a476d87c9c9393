"""The llm.chat skill against a fake OpenAI-compatible server on loopback: what it sends, what it
returns, and the retry intent of every failure."""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.clock import ManualClock
from common.config import ToolSettings
from common.errors import ConfigError, InvalidInputError, PermanentError, RetryableError
from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import task_context
from worker.context import TaskContext
from worker.skills.tools.llm import LlmTool, parse_retry_after

KEY_ENV = "CLAW_TEST_LLM_KEY"
KEY = "sk-test-0123456789abcdef"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]


def settings_for(server: FakeOpenAIServer, **changes: Any) -> ToolSettings:
    fields: dict[str, Any] = {
        "llm_base_url": server.base_url,
        "llm_model": "fake-default",
        "llm_api_key_env": KEY_ENV,
        "llm_extra_headers": {"X-Cluster": "claw-test"},
        "http_allow_private": ["127.0.0.1"],  # the fake API is on loopback
    }
    return ToolSettings(**(fields | changes))


@pytest.fixture
async def llm(openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LlmTool]:
    monkeypatch.setenv(KEY_ENV, KEY)
    tool = LlmTool(settings_for(openai_server))
    yield tool
    await tool.aclose()  # its one HTTP client, reused by every call


@pytest.fixture
def ctx() -> TaskContext:
    return task_context("llm.chat")


async def test_success_returns_the_message_usage_model_and_finish_reason(
    llm: LlmTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    result = await llm.chat(ctx, {"model": "fake-large", "messages": MESSAGES, "temperature": 0.2, "max_tokens": 50})
    assert result == {
        "message": {"role": "assistant", "content": "Hello from the fake model."},
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        "model": "fake-large-0001",
        "finish_reason": "stop",
    }


async def test_the_request_carries_model_messages_options_key_and_extra_headers(
    llm: LlmTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    await llm.chat(
        ctx, {"messages": MESSAGES, "temperature": 0.2, "max_tokens": 50, "headers": {"X-Agent-Id": "agent-7"}}
    )
    [request] = openai_server.completions()
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.json() == {"model": "fake-default", "messages": MESSAGES, "temperature": 0.2, "max_tokens": 50}
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert (request.headers["x-cluster"], request.headers["x-agent-id"]) == ("claw-test", "agent-7")


async def test_input_headers_cannot_override_the_configured_ones(
    llm: LlmTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    await llm.chat(ctx, {"messages": MESSAGES, "headers": {"x-cluster": "spoofed"}})
    assert openai_server.completions()[0].headers["x-cluster"] == "claw-test"
    with pytest.raises(InvalidInputError, match="'headers' may not set Authorization"):
        await llm.chat(ctx, {"messages": MESSAGES, "headers": {"Authorization": "Bearer mine"}})


async def test_429_is_retryable_after_the_retry_after_seconds(
    llm: LlmTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    openai_server.mode, openai_server.retry_after = "rate_limited", "7"
    with pytest.raises(RetryableError, match="HTTP 429: Rate limit reached") as caught:
        await llm.chat(ctx, {"messages": MESSAGES})
    assert caught.value.retry_after_s == 7.0


async def test_429_with_an_http_date_is_retryable_after_the_time_left(
    openai_server: FakeOpenAIServer, ctx: TaskContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    clock = ManualClock(start=1_700_000_000.0)
    llm = LlmTool(settings_for(openai_server), clock=clock)
    openai_server.mode = "rate_limited"
    openai_server.retry_after = email.utils.formatdate(clock.now() + 30, usegmt=True)
    try:
        with pytest.raises(RetryableError) as caught:
            await llm.chat(ctx, {"messages": MESSAGES})
    finally:
        await llm.aclose()
    assert caught.value.retry_after_s == 30.0


async def test_429_without_retry_after_is_retryable_with_no_delay(
    llm: LlmTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    openai_server.mode, openai_server.retry_after = "rate_limited", None
    with pytest.raises(RetryableError) as caught:
        await llm.chat(ctx, {"messages": MESSAGES})
    assert caught.value.retry_after_s is None


async def test_a_server_error_is_retryable(llm: LlmTool, ctx: TaskContext, openai_server: FakeOpenAIServer) -> None:
    openai_server.mode = "server_error"
    with pytest.raises(RetryableError, match="HTTP 500: The server had an error"):
        await llm.chat(ctx, {"messages": MESSAGES})


async def test_a_dropped_connection_is_retryable(
    llm: LlmTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    openai_server.mode = "drop"
    with pytest.raises(RetryableError, match="llm.chat: the request to the model API failed"):
        await llm.chat(ctx, {"messages": MESSAGES})


async def test_a_400_is_permanent_with_the_servers_message(
    llm: LlmTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    openai_server.mode = "bad_request"
    with pytest.raises(PermanentError, match="HTTP 400: Invalid value for 'temperature'.") as caught:
        await llm.chat(ctx, {"messages": MESSAGES, "temperature": 9})
    assert not isinstance(caught.value, RetryableError)


async def test_the_key_never_appears_in_an_error_even_when_the_server_quotes_it(
    llm: LlmTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    openai_server.mode = "bad_request"
    openai_server.error_message = "Incorrect API key provided: {authorization}"
    with pytest.raises(PermanentError) as caught:
        await llm.chat(ctx, {"messages": MESSAGES})
    assert KEY not in str(caught.value) and "Incorrect API key provided: Bearer ***" in str(caught.value)


async def test_a_missing_key_is_permanent_and_names_the_variable(
    openai_server: FakeOpenAIServer, ctx: TaskContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    llm = LlmTool(settings_for(openai_server))
    with pytest.raises(PermanentError, match=f"no API key: set the environment variable {KEY_ENV} on the worker"):
        await llm.chat(ctx, {"messages": MESSAGES})
    assert openai_server.requests == []


async def test_an_answer_that_is_not_a_completion_is_permanent(
    llm: LlmTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    """Most likely tools.llm_base_url points at something else: another attempt would not help."""
    openai_server.mode = "html"
    with pytest.raises(PermanentError, match="the model API's answer is not a chat completion"):
        await llm.chat(ctx, {"messages": MESSAGES})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),
        ("Tue, 14 Nov 2023 22:13:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=1_700_000_000.0) == expected


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({}, "llm.chat: 'messages' must be a non-empty list"),
        ({"messages": []}, "llm.chat: 'messages' must be a non-empty list"),
        ({"messages": [{"content": "hi"}]}, "llm.chat: 'messages'\\[0\\] must be an object with a string 'role'"),
        ({"messages": [{"role": "user", "content": 5}]}, "'messages'\\[0\\].content must be a string"),
        ({"messages": MESSAGES, "model": 4}, "llm.chat: 'model' must be a string"),
        ({"messages": MESSAGES, "stream": True}, "llm.chat: unknown field\\(s\\) 'stream'"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(
    llm: LlmTool, ctx: TaskContext, input: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await llm.chat(ctx, input)


def test_configured_authorization_header_or_bad_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tools.llm_extra_headers may not set Authorization"):
        LlmTool(ToolSettings(llm_extra_headers={"Authorization": "Bearer x"}))
    with pytest.raises(ConfigError, match="tools.llm_base_url"):
        LlmTool(ToolSettings(llm_base_url="api.openai.com/v1"))
