"""The tool skills on a real worker: tasks submitted to an in-process coordinator on a real
nats-server, run by a worker built with `tool_skills(config.tools)`, results stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from tests.conftest import make_config
from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import connected_client, running_coordinator, running_worker, spec, wait_nodes_online
from worker.skills import SkillRegistry
from worker.skills.tools import tool_skills

KEY_ENV = "CLAW_TEST_LLM_KEY"


async def run(client: ClawClient, skill: str, input: dict[str, Any]) -> tuple[TaskState, Any, str | None]:
    """Submit one task and wait for it; its final state, decoded result and error type."""
    submitted = await client.submit(spec(skill, input, max_attempts=1))
    state = (await client.wait([submitted.task_id], timeout_s=30, poll_s=0.1))[submitted.task_id]
    task = await client.get_task(submitted.task_id, history=False)
    result = msgspec.json.decode(bytes(task.result)) if task.result is not None else None
    return state, result, task.error_type


async def test_llm_chat_and_files_shared_in_a_workspace_run_through_the_cluster(
    nats_server: EmbeddedNatsServer,
    prefix: str,
    tmp_path: Path,
    openai_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-integration")
    tools = {
        "sandbox_root": str(tmp_path / "sandboxes"),
        "llm_base_url": openai_server.base_url,
        "llm_model": "fake-model",
        "llm_api_key_env": KEY_ENV,
        "llm_extra_headers": {"X-Cluster": "it"},
        "http_allow_private": ["127.0.0.1"],  # the fake API is on loopback
    }
    config = make_config(nats_server, prefix, tmp_path, tools=tools)
    skills = SkillRegistry(tool_skills(config.tools))
    async with running_coordinator(config), running_worker(config, skills=skills), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        chat = await run(client, "llm.chat", {"messages": [{"role": "user", "content": "plan my day"}]})
        written = await run(
            client,
            "fs.write",
            {"workspace": "session-1", "path": "notes/plan.md", "content": "1. coffee", "make_parents": True},
        )
        read = await run(client, "fs.read", {"workspace": "session-1", "path": "notes/plan.md"})
        escape = await run(client, "fs.read", {"workspace": "session-1", "path": "../../claw.db"})
    assert chat == (
        TaskState.SUCCEEDED,
        {
            "message": {"role": "assistant", "content": "Hello from the fake model."},
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
            "model": "fake-model-0001",
            "finish_reason": "stop",
        },
        None,
    )
    [request] = openai_server.completions()
    assert request.headers["authorization"] == "Bearer sk-integration" and request.headers["x-cluster"] == "it"
    assert written == (TaskState.SUCCEEDED, {"path": "notes/plan.md", "size": 9}, None)
    assert read == (TaskState.SUCCEEDED, {"path": "notes/plan.md", "size": 9, "content": "1. coffee"}, None)
    assert (tmp_path / "sandboxes" / "session-1" / "notes" / "plan.md").read_text() == "1. coffee"
    assert escape == (TaskState.DEAD, None, "InvalidInputError")
