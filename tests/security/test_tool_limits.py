"""Probes: a task's processes taking more than their share.

Four forked children over the memory limit together (each under the per-process limit), a fork
flood over the process limit, a file over the per-file limit, a workspace filled over its quota by
fs.write or by a process. With a cgroup per run (where the worker may make one) and without (the
watchdog), in each sandbox mode.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.states import TaskState
from communication.nats_server import EmbeddedNatsServer
from tests.helpers import eventually
from tests.security.conftest import cluster_config, start_cluster, tool_settings
from tests.tool_processes import working_in

MIB = 1024 * 1024

# Four children of 150 MiB each: 600 MiB together, under a 256 MiB limit for the whole run; each
# child is far below the per-process limit (RLIMIT_AS, python_memory_mb), which alone lets it be.
FORKED_HOGS = """
import os, sys, time
children = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        block = b"x" * (150 * 1024 * 1024)  # touched, so resident
        time.sleep(60)
        os._exit(0)
    children.append(pid)
codes = [os.waitpid(pid, 0)[1] for pid in children]
print("survived" if all(code == 0 for code in codes) else f"children ended with {codes}")
"""

FORK_FLOOD = """
import os, time
started = 0
try:
    for _ in range(60):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        started += 1
except OSError as exc:
    print(f"fork refused after {started}: {exc.strerror}", flush=True)
    raise SystemExit(3)
print(f"started {started}", flush=True)
time.sleep(60)
"""


@pytest.fixture(params=[True, False], ids=["cgroup", "watchdog"])
def cgroups(request: pytest.FixtureRequest) -> bool:
    """Whether runs get a cgroup (where the worker may make one) or only the watchdog."""
    return bool(request.param)


async def test_forked_children_together_cannot_exceed_the_memory_limit(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str, cgroups: bool
) -> None:
    tools = tool_settings(sandbox, tmp_path, task_memory_mb=256, python_memory_mb=1024, sandbox_cgroups=cgroups)
    config = cluster_config(nats_server, prefix, tmp_path, tools)
    async with start_cluster(config) as cluster:
        outcome = await cluster.run("python.exec", {"code": FORKED_HOGS, "timeout_s": 120})
        workspace = str(cluster.workspace(outcome.task_id))
        await eventually(lambda: not working_in(workspace), timeout_s=15, what="every process of the run gone")
    assert outcome.state == TaskState.SUCCEEDED, outcome.error_message
    assert outcome.result["limit_exceeded"] == "memory"
    assert "survived" not in outcome.result["stdout"]
    assert outcome.result["duration_s"] < 60  # stopped, not run to the children's end


async def test_a_fork_flood_cannot_exceed_the_process_limit(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str, cgroups: bool
) -> None:
    tools = tool_settings(sandbox, tmp_path, task_max_processes=16, sandbox_cgroups=cgroups)
    config = cluster_config(nats_server, prefix, tmp_path, tools)
    async with start_cluster(config) as cluster:
        outcome = await cluster.run("python.exec", {"code": FORK_FLOOD, "timeout_s": 120})
        workspace = str(cluster.workspace(outcome.task_id))
        await eventually(lambda: not working_in(workspace), timeout_s=15, what="every process of the run gone")
    assert outcome.state == TaskState.SUCCEEDED, outcome.error_message
    assert outcome.result["limit_exceeded"] == "processes"
    assert outcome.result["duration_s"] < 60
    if outcome.result["exit_code"] == 3:  # the cgroup refused the fork: the count never went over
        assert int(outcome.result["stdout"].split("after ")[1].split(":")[0]) < 16


async def test_fs_write_keeps_to_the_file_and_workspace_limits(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str
) -> None:
    tools = tool_settings(sandbox, tmp_path, write_max_bytes=64 * 1024, workspace_max_bytes=256 * 1024)
    config = cluster_config(nats_server, prefix, tmp_path, tools)
    chunk = "x" * (60 * 1024)
    async with start_cluster(config) as cluster:
        big = await cluster.run("fs.write", {"workspace": "q", "path": "big", "content": "x" * (65 * 1024)})
        fits = [await cluster.run("fs.write", {"workspace": "q", "path": f"f{i}", "content": chunk}) for i in range(4)]
        over = await cluster.run("fs.write", {"workspace": "q", "path": "f4", "content": chunk})
        grow = await cluster.run("fs.write", {"workspace": "q", "path": "f0", "content": chunk, "append": True})
        replace = await cluster.run("fs.write", {"workspace": "q", "path": "f0", "content": "small"})
        usage = sum(f.stat().st_size for f in cluster.workspace("q").iterdir())
    assert big.state != TaskState.SUCCEEDED and "more than tools.write_max_bytes" in (big.error_message or "")
    assert [f.state for f in fits] == [TaskState.SUCCEEDED] * 4
    assert over.state != TaskState.SUCCEEDED and "tools.workspace_max_bytes" in (over.error_message or "")
    assert grow.state != TaskState.SUCCEEDED and "more than tools.write_max_bytes" in (grow.error_message or "")
    assert replace.state == TaskState.SUCCEEDED  # replacing a file frees its old size
    assert usage <= 256 * 1024


BIG_FILE = """
try:
    with open("big", "wb") as file:
        file.write(b"x" * (200 * 1024))
    print("wrote it all")
except OSError as exc:
    print(f"refused: {exc.strerror}")
"""

MANY_FILES = """
for i in range(10):
    with open(f"part{i}", "wb") as file:
        file.write(b"x" * (60 * 1024))
print("wrote ten files")
"""


async def test_processes_keep_to_the_file_and_workspace_limits(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str
) -> None:
    tools = tool_settings(sandbox, tmp_path, write_max_bytes=64 * 1024, workspace_max_bytes=256 * 1024)
    config = cluster_config(nats_server, prefix, tmp_path, tools)
    async with start_cluster(config) as cluster:
        big = await cluster.run("python.exec", {"code": BIG_FILE, "workspace": "p"})
        shell = await cluster.run("shell.exec", {"argv": ["sh", "-c", "cat big big > bigger"], "workspace": "p"})
        many = await cluster.run("python.exec", {"code": MANY_FILES, "workspace": "p"})
    assert big.state == TaskState.SUCCEEDED, big.error_message
    assert big.result["stdout"] == "refused: File too large\n"
    assert big.result["exit_code"] == 0
    assert shell.result["exit_code"] in (-25, 128 + 25)  # cat ended by SIGXFSZ (sh reports it as 153)
    assert many.state != TaskState.SUCCEEDED
    assert "the run left its workspace holding" in (many.error_message or "")
    assert "more than tools.workspace_max_bytes (262144)" in (many.error_message or "")
