"""The attack suite's clusters: a real coordinator and worker (in this process, on uvloop) on the
session's nats-server, a guard that lets every task run (the probes attack the tools, not the
guard), and the tool sandbox in each of its modes.

`sandbox` is a test's mode: "bwrap" (namespaces; skipped with the reason when bwrap cannot run here)
or "none" (the sandbox user, a subreaper launcher, a cgroup or the watchdog, without namespaces).

The gateway attacks' cluster (`gw_config`, `gw`) comes from tests/gateway_helpers.py, shared with the
integration tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.config import ClawConfig
from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from tests.conftest import make_config
from tests.gateway_helpers import gateway_settings as gateway_settings
from tests.gateway_helpers import guard_policy as guard_policy
from tests.gateway_helpers import gw as gw
from tests.gateway_helpers import gw_config as gw_config
from tests.helpers import connected_client, running_coordinator, running_worker, spec, wait_nodes_online

BWRAP_PROBE = ["--unshare-pid", "--unshare-net", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"]


def bwrap_reason() -> str | None:
    """Why bwrap cannot be tested here, or None when it can."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bwrap (Debian's bubblewrap) is not installed; scripts/test.sh installs it when run as root"
    done = subprocess.run([bwrap, *BWRAP_PROBE], capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        return f"bwrap cannot make namespaces here: {done.stderr.decode(errors='replace').strip()}"
    return None


BWRAP_SKIP = bwrap_reason()


def python_for_sandbox_user() -> str | None:
    """An interpreter the sandbox user can read: without bwrap the code runs as that user, and an
    interpreter installed under a private home (pyenv in /root) cannot import its own modules."""
    for candidate in (sys.executable, shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")):
        if candidate and _others_may_read(os.path.realpath(candidate)):
            return candidate
    return None


def _others_may_read(path: str) -> bool:
    parent = os.path.dirname(path)
    while parent not in ("/", ""):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(parent)
    return bool(os.stat(path).st_mode & stat.S_IROTH)


@pytest.fixture(params=["bwrap", "none"])
def sandbox(request: pytest.FixtureRequest) -> str:
    """The sandbox mode under test."""
    if request.param == "bwrap" and BWRAP_SKIP:
        pytest.skip(BWRAP_SKIP)
    return str(request.param)


def tool_settings(sandbox: str, tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """The `tools` section for `sandbox` mode, plus `changes`."""
    tools: dict[str, Any] = {
        "sandbox_root": str(tmp_path / "sandboxes"),
        "sandbox_bwrap": "require" if sandbox == "bwrap" else "off",
        "shell_allow": ["sh", "sleep", "cat", "ln", "nohup", "setsid"],
    }
    if sandbox == "none":
        python = python_for_sandbox_user()
        if python is None:
            pytest.skip("no Python interpreter here is readable by the sandbox user (needed without bwrap)")
        tools["python_executable"] = python
    return tools | changes


def cluster_config(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, tools: dict[str, Any], **sections: Any
) -> ClawConfig:
    """A config whose guard lets every task run."""
    policy = tmp_path / "guard.yaml"
    policy.write_text("rules: []\ndefault: allow\n")
    coordinator = {"guard_policy": str(policy), **sections.pop("coordinator", {})}
    return make_config(nats_server, prefix, tmp_path, coordinator=coordinator, tools=tools, **sections)


@dataclass(frozen=True)
class Outcome:
    """How a task ended."""

    task_id: str
    state: TaskState
    result: Any
    error_type: str | None
    error_message: str | None


class Cluster:
    """A client of a running coordinator and worker, and a way to run one task to its end."""

    def __init__(self, client: ClawClient, config: ClawConfig) -> None:
        self.client = client
        self.config = config

    async def submit(self, skill: str, input: dict[str, Any], **options: Any) -> str:
        """Submit one task that is tried once; its id."""
        return (await self.client.submit(spec(skill, input, max_attempts=1, **options))).task_id

    async def outcome(self, task_id: str, timeout_s: float = 60) -> Outcome:
        """Wait for the task to end; how it ended."""
        await self.client.wait([task_id], timeout_s=timeout_s, poll_s=0.1)
        task = await self.client.get_task(task_id, history=False)
        result = msgspec.json.decode(bytes(task.result)) if task.result is not None else None
        return Outcome(task_id, task.state, result, task.error_type, task.error_message)

    async def run(self, skill: str, input: dict[str, Any], **options: Any) -> Outcome:
        """Submit one task and wait for it."""
        return await self.outcome(await self.submit(skill, input, **options))

    def workspace(self, name: str) -> Path:
        """The directory of a workspace (as the worker sees it)."""
        return Path(self.config.tools.sandbox_root).resolve() / name


@contextlib.asynccontextmanager
async def start_cluster(config: ClawConfig) -> AsyncIterator[Cluster]:
    """A coordinator and a worker with the built-in skills (tools included), and a client."""
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        yield Cluster(client, config)
