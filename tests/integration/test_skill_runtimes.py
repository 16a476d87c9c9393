"""One task of each skill runtime through a whole cluster (client, coordinator, worker on a real
nats-server), once on uvloop - the loop `claw` runs - and once on asyncio's own loop.

The runtimes: a built-in Python handler (echo), an installed `command:` skill (the README's
text.stats), python.exec and shell.exec with stdin. The last three start child processes, whose pipe
transports differ between the two loops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from tests.conftest import make_config
from tests.helpers import (
    BOTH_LOOPS,
    connected_client,
    eventually,
    running_coordinator,
    running_worker,
    spec,
    wait_nodes_online,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "skills"
pytestmark = BOTH_LOOPS


@pytest.fixture
async def client(nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path) -> AsyncIterator[ClawClient]:
    """A cluster whose guard lets every task run (risky tools included), and a client of it."""
    policy = tmp_path / "guard.yaml"
    policy.write_text("rules: []\ndefault: allow\n")
    config = make_config(
        nats_server,
        prefix,
        tmp_path,
        coordinator={"guard_policy": str(policy)},
        tools={"sandbox_root": str(tmp_path / "sandboxes"), "shell_allow": ["cat"]},
    )
    async with running_coordinator(config), running_worker(config), connected_client(config) as connected:
        await wait_nodes_online(connected, 1)
        yield connected


async def run(client: ClawClient, skill: str, input: dict[str, Any]) -> Any:
    """Submit one task, wait for it, and return its result; a task that did not succeed fails the test."""
    submitted = await client.submit(spec(skill, input, max_attempts=1))
    await client.wait([submitted.task_id], timeout_s=30, poll_s=0.1)
    task = await client.get_task(submitted.task_id, history=False)
    assert task.state == TaskState.SUCCEEDED, f"{task.state.value}: {task.error_type}: {task.error_message}"
    return msgspec.json.decode(bytes(task.result))


async def test_a_builtin_python_handler_runs(client: ClawClient) -> None:
    assert await run(client, "echo", {"hello": "world"}) == {"hello": "world"}


async def test_an_installed_command_skill_runs(client: ClawClient) -> None:
    await client.install_skill(EXAMPLES / "text_stats")
    await eventually(lambda: _advertised(client, "text.stats"), what="the worker loads text.stats")
    result = await run(client, "text.stats", {"text": "to be or not to be", "top": 2})
    assert result == {"words": 6, "lines": 1, "characters": 18, "top": [["to", 2], ["be", 2]]}


async def test_python_exec_runs_code_that_reads_stdin(client: ClawClient) -> None:
    result = await run(client, "python.exec", {"code": "import sys; print(sys.stdin.read()[::-1])", "stdin": "abc"})
    assert (result["exit_code"], result["stdout"], result["limit_exceeded"]) == (0, "cba\n", None)


async def test_shell_exec_feeds_stdin_to_the_program(client: ClawClient) -> None:
    result = await run(client, "shell.exec", {"argv": ["cat"], "stdin": "line one\nline two\n"})
    assert (result["exit_code"], result["stdout"], result["stderr"]) == (0, "line one\nline two\n", "")


async def _advertised(client: ClawClient, skill: str) -> bool:
    return any(skill in n.skills for n in await client.nodes() if n.status == "online")
