"""The response cache: an llm.chat call opted in (`cache_ttl_s`) is answered from the cache when an
equal one was made within the TTL - no API call, the hit in the timeline and in usage; `claw cache
stats|clear` (the verbs) report and empty it."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import verbs
from common.api import Empty, UsageRequest
from common.config import ClawConfig
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from tests.conftest import make_config
from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import connected_client, run_to_success, running_coordinator, running_worker

KEY_ENV = "CLAW_TEST_CACHE_KEY"
CHAT = {"model": "fake-c", "messages": [{"role": "user", "content": "same question"}], "cache_ttl_s": 60}


@pytest.fixture
def llm_config(
    nats_server: EmbeddedNatsServer,
    prefix: str,
    tmp_path: Path,
    openai_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> ClawConfig:
    monkeypatch.setenv(KEY_ENV, "sk-cache")
    return make_config(nats_server, prefix, tmp_path, tools=openai_server.tools(tmp_path / "sandboxes", KEY_ENV))


async def run(client: ClawClient, input: dict[str, object], tenant: str | None = None) -> str:
    return await run_to_success(client, "llm.chat", input, tenant=tenant, what="the call done")


async def test_an_equal_call_within_the_ttl_is_answered_from_the_cache(
    llm_config: ClawConfig, openai_server: FakeOpenAIServer
) -> None:
    async with running_coordinator(llm_config), running_worker(llm_config), connected_client(llm_config) as client:
        first = await run(client, CHAT)
        again = [await run(client, CHAT) for _ in range(2)]
        assert len(openai_server.completions()) == 1
        other = await run(client, {**CHAT, "temperature": 0.5})  # other parameters: another call
        assert len(openai_server.completions()) == 2

        hit = await client.get_task(again[0])
        assert hit.result == (await client.get_task(first)).result
        assert any(e.kind == "log" and b"response cache hit" in bytes(e.data or b"") for e in hit.events)
        assert any(e.kind == "usage" and b'"cache_hit":true' in bytes(e.data or b"") for e in hit.events)
        assert other not in again

        stats = await client.call(verbs.CACHE_STATS, Empty())
        assert stats.entries == 2 and stats.hits_24h == 2
        rows = (await client.call(verbs.USAGE, UsageRequest(by=["model"]))).rows
        assert sum(r.cache_hits for r in rows) == 2

        assert (await client.call(verbs.CACHE_CLEAR, Empty())).cleared == 2
        await run(client, CHAT)
        assert len(openai_server.completions()) == 3


async def test_another_tenants_equal_call_is_not_answered_from_the_cache(
    llm_config: ClawConfig, openai_server: FakeOpenAIServer
) -> None:
    """The cache key holds the tenant: one tenant's answer is never handed to another."""
    async with running_coordinator(llm_config), running_worker(llm_config), connected_client(llm_config) as client:
        acme = await run(client, CHAT, tenant="acme")
        other = await run(client, CHAT, tenant="globex")
        assert len(openai_server.completions()) == 2, "globex was served acme's cached answer"
        again = await run(client, CHAT, tenant="acme")
        assert len(openai_server.completions()) == 2  # acme's own answer, from the cache
        hit = await client.get_task(again)
        assert hit.result == (await client.get_task(acme)).result
        missed = await client.get_task(other)
        assert not any(e.kind == "log" and b"response cache hit" in bytes(e.data or b"") for e in missed.events)
