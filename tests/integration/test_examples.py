"""The runnable examples that docs/Skills.md points to really run."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import msgspec

from common.config import ClawConfig
from common.states import TaskState
from tests.helpers import connected_client, running_coordinator, running_worker, spec, wait_nodes_online
from worker.skills import builtin_registry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    module_spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


async def test_custom_skill_example_runs_on_a_worker(config: ClawConfig) -> None:
    example = load("custom_skill_worker")
    skills = builtin_registry()
    skills.register(example.word_count)  # declared with @skill, as the example registers it
    async with running_coordinator(config), running_worker(config, skills=skills), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("text.word_count", {"text": "to be or not to be"}))
        assert await client.wait([submitted.task_id], timeout_s=20) == {submitted.task_id: TaskState.SUCCEEDED}
        task = await client.get_task(submitted.task_id)
    assert msgspec.json.decode(bytes(task.result)) == {"words": 6, "top": [["to", 2], ["be", 2], ["or", 1]]}
    assert [e.kind for e in task.events].count("log") == 1
