"""The writing skills installed from their folders into a real worker whose LLM is the fake OpenAI
server (a real HTTP server on loopback) answering each prompt deterministically: an outline, its
chapters fanned out as concurrent tasks, then the polish, each task's output feeding the next."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from common.config import ClawConfig
from common.skills import load_manifest, validate_output
from common.states import TaskState
from communication.nats_server import EmbeddedNatsServer
from storage.artifacts import open_artifact_store
from tests.conftest import make_config
from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import connected_client, running_coordinator, running_worker, spec, wait_nodes_online
from tests.integration.test_quant_skills import finish, install
from tests.skill_modules import SKILLS

KEY_ENV = "CLAW_TEST_LLM_KEY"
OUTLINE = re.compile(r"an outline of (\d+) chapters for a text about: (.+?)\.\n")
CHAPTER = re.compile(r'Write chapter (\d+): "(.+?)"')


def book_model(request: dict[str, Any]) -> str:
    """A deterministic model: an outline, a chapter or a polished draft, by what the prompt asks."""
    prompt = request["messages"][-1]["content"]
    if asked := OUTLINE.search(prompt):
        count, topic = int(asked.group(1)), asked.group(2)
        chapters = [{"title": f"{topic} part {i}", "summary": f"what part {i} says"} for i in range(1, count + 1)]
        return json.dumps({"chapters": chapters})
    if asked := CHAPTER.search(prompt):
        return f"Draft text of chapter {asked.group(1)} ({asked.group(2)})."
    if prompt.startswith("Polish this draft"):
        return prompt.split("\n\n", 1)[1].replace("Draft text", "Polished text")
    return "I do not know what to answer."


@pytest.fixture
def llm_config(
    nats_server: EmbeddedNatsServer,
    prefix: str,
    tmp_path: Path,
    openai_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> ClawConfig:
    """A cluster config whose workers call the fake server as their LLM."""
    monkeypatch.setenv(KEY_ENV, "sk-writing")
    tools = openai_server.tools(tmp_path / "sandboxes", KEY_ENV, llm_model="fake-writer")
    return make_config(nats_server, prefix, tmp_path, tools=tools)


FOLDERS = ["writing/outline", "writing/write_chapter", "writing/polish"]


async def test_outline_then_chapters_fanned_out_then_polish(
    llm_config: ClawConfig, openai_server: FakeOpenAIServer
) -> None:
    openai_server.respond = book_model
    async with (
        running_coordinator(llm_config),
        running_worker(llm_config) as worker,
        connected_client(llm_config) as client,
    ):
        await wait_nodes_online(client, 1)
        await install(client, worker, FOLDERS)
        submitted = await client.submit(spec("writing.outline", {"topic": "Tides", "chapters": 3}))
        outline_task, outline = await finish(client, submitted.task_id)
        assert outline_task.state == TaskState.SUCCEEDED, outline_task.error_message

        chapter_specs = [
            spec("writing.write_chapter", {"topic": outline["topic"], "chapter": item, "outline": outline["chapters"]})
            for item in outline["chapters"]
        ]
        chapter_ids = [s.task_id for s in await client.submit_many(chapter_specs)]
        chapters = [await finish(client, task_id) for task_id in chapter_ids]
        assert [t.state for t, _ in chapters] == [TaskState.SUCCEEDED] * 3

        joined = {"topic": "Tides", "title": "All about tides", "chapters": [r for _, r in reversed(chapters)]}
        polish_task, polished = await finish(client, (await client.submit(spec("writing.polish", joined))).task_id)
        store = await open_artifact_store(llm_config.artifacts)
        try:
            [book] = polish_task.artifacts
            book_bytes = await store.get_bytes(book.key)
        finally:
            await store.close()

    assert polish_task.state == TaskState.SUCCEEDED, polish_task.error_message
    assert [c["title"] for c in outline["chapters"]] == ["Tides part 1", "Tides part 2", "Tides part 3"]
    assert chapters[1][1]["text"] == "Draft text of chapter 2 (Tides part 2)."
    assert polished["markdown"] == (
        "# All about tides\n\n"
        "## 1. Tides part 1\n\nPolished text of chapter 1 (Tides part 1).\n\n"
        "## 2. Tides part 2\n\nPolished text of chapter 2 (Tides part 2).\n\n"
        "## 3. Tides part 3\n\nPolished text of chapter 3 (Tides part 3).\n"
    )
    assert book.name == "book.md" and book_bytes.decode() == polished["markdown"]
    assert polished["book"]["sha256"] == book.sha256 and polished["model"] == "fake-writer-0001"
    for folder, result in zip(FOLDERS, [outline, chapters[0][1], polished], strict=True):
        validate_output(load_manifest(SKILLS / folder), result)
    requests = openai_server.completions()
    assert len(requests) == 5
    assert {r.headers["authorization"] for r in requests} == {"Bearer sk-writing"}
    assert requests[0].json()["response_format"] == {"type": "json_object"}
    assert all(r.json()["model"] == "fake-writer" for r in requests)


async def test_an_answer_that_is_no_outline_is_retried_and_the_next_attempt_succeeds(
    llm_config: ClawConfig, openai_server: FakeOpenAIServer
) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def first_talks_then_answers(request: dict[str, Any]) -> str:
        with lock:
            calls.append(1)
            first = len(calls) == 1
        return "Sure! Tides are fascinating." if first else book_model(request)

    openai_server.respond = first_talks_then_answers
    async with (
        running_coordinator(llm_config),
        running_worker(llm_config) as worker,
        connected_client(llm_config) as client,
    ):
        await wait_nodes_online(client, 1)
        await install(client, worker, FOLDERS[:1])
        submitted = await client.submit(spec("writing.outline", {"topic": "Tides", "chapters": 2}))
        task, result = await finish(client, submitted.task_id)
    assert task.state == TaskState.SUCCEEDED and task.attempts == 2
    first = task.attempt_log[0]
    assert first.error_type == "RetryableError"
    assert first.error_message == (
        "writing.outline: the model's answer is not an outline of 2 chapters: found 0 chapter(s) in it, 2 asked for"
    )
    assert len(result["chapters"]) == 2


async def test_a_repeated_chapter_fails_polish_without_calling_the_model(
    llm_config: ClawConfig, openai_server: FakeOpenAIServer
) -> None:
    async with (
        running_coordinator(llm_config),
        running_worker(llm_config) as worker,
        connected_client(llm_config) as client,
    ):
        await wait_nodes_online(client, 1)
        await install(client, worker, FOLDERS[2:])
        chapter = {"index": 1, "title": "One", "text": "x"}
        submitted = await client.submit(spec("writing.polish", {"topic": "T", "chapters": [chapter, chapter]}))
        task, _ = await finish(client, submitted.task_id)
    assert task.state in (TaskState.FAILED, TaskState.DEAD) and task.attempts == 1
    assert task.error_message == "writing.polish: chapter index(es) [1] appear more than once"
    assert openai_server.completions() == []
