"""Smart retry's escalation: an llm.chat task the API refuses for a reason retrying cannot fix (HTTP
400) goes to `needs_input` with the reason, not to the DLQ; `claw attention` lists it until a person
retries it (after fixing the cause) or cancels it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import ClawConfig
from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from tests.conftest import make_config
from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import ROOT, connected_client, eventually, running_coordinator, running_worker, spec

KEY_ENV = "CLAW_TEST_ATTENTION_KEY"
CHAT = {"model": "fake-m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def llm_config(
    nats_server: EmbeddedNatsServer,
    prefix: str,
    tmp_path: Path,
    openai_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> ClawConfig:
    monkeypatch.setenv(KEY_ENV, "sk-attention")
    tools = openai_server.tools(tmp_path / "sandboxes", KEY_ENV)
    return make_config(nats_server, prefix, tmp_path, tools=tools)


async def state_of(client: ClawClient, task_id: str) -> TaskState:
    return (await client.get_task(task_id, history=False)).state


async def attention(config: ClawConfig) -> list[dict[str, object]]:
    """`claw attention --json` as a user runs it."""
    env = {"CLAW_NATS_URL": config.nats.url, "CLAW_NATS_PREFIX": config.nats.prefix, "PYTHONPATH": str(ROOT)}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli", "attention", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    listed: list[dict[str, object]] = json.loads(done.stdout)
    return listed


async def test_a_refused_call_needs_a_person_until_retried_or_cancelled(
    llm_config: ClawConfig, openai_server: FakeOpenAIServer
) -> None:
    openai_server.mode = "bad_request"
    openai_server.error_message = "The model `fake-m` does not exist or you do not have access to it."
    async with running_coordinator(llm_config), running_worker(llm_config), connected_client(llm_config) as client:
        first, second = [r.task_id for r in await client.submit_many([spec("llm.chat", CHAT), spec("llm.chat", CHAT)])]
        for task_id in (first, second):
            await eventually(lambda t=task_id: _is(client, t, TaskState.NEEDS_INPUT), what="needs_input")  # type: ignore[misc]
        task = await client.get_task(first)
        assert "does not exist" in (task.error_message or "")
        assert any(e.kind == "needs input" for e in task.events)
        assert not (await client.dlq_page()).items  # not dead-lettered
        listed = await attention(llm_config)
        assert {t["task_id"] for t in listed} == {first, second}

        openai_server.mode = "ok"  # the cause fixed (say, the model name on the API's side)
        await client.retry(first)
        await eventually(lambda: _is(client, first, TaskState.SUCCEEDED), what="the retried task succeeded")
        await client.cancel(second)
        assert await state_of(client, second) == TaskState.CANCELLED
        assert await attention(llm_config) == []


async def _is(client: ClawClient, task_id: str, state: TaskState) -> bool:
    return await state_of(client, task_id) == state
