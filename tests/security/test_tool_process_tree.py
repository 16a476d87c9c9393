"""Probes: a task's processes outliving it.

A `setsid` grandchild, a double-forked daemon and a `nohup ... &` left behind, through the tool's
own timeout, the task's timeout, a cancel, and a normal exit: none may outlive the task.
"""

from __future__ import annotations

from pathlib import Path

from common.states import TaskState
from communication.nats_server import EmbeddedNatsServer
from tests.helpers import eventually
from tests.security.conftest import cluster_config, start_cluster, tool_settings
from tests.tool_processes import marked, new_marker

ESCAPES = """
import os, subprocess, sys, time
subprocess.Popen(["setsid", "sleep", "{setsid}"])
daemon = os.fork()
if daemon == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{double_fork}"])
    os._exit(0)
os.waitpid(daemon, 0)
subprocess.Popen("nohup sleep {nohup} >/dev/null 2>&1 &", shell=True)
open("started", "w").close()
print("escapes started", flush=True)
{then}
"""


def escapes(then: str) -> tuple[str, list[str]]:
    """The probe's code, and the markers of its three escapees."""
    markers = {"setsid": new_marker(), "double_fork": new_marker(), "nohup": new_marker()}
    return ESCAPES.format(then=then, **markers), list(markers.values())


async def all_gone(markers: list[str]) -> None:
    """Until no marked process is alive; fails the test if one still is after a while."""
    await eventually(lambda: not any(marked(m) for m in markers), timeout_s=15, what=f"no process of {markers}")


async def test_escapees_die_at_the_tools_timeout(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str
) -> None:
    code, markers = escapes("time.sleep(300)")
    config = cluster_config(nats_server, prefix, tmp_path, tool_settings(sandbox, tmp_path))
    async with start_cluster(config) as cluster:
        outcome = await cluster.run("python.exec", {"code": code, "timeout_s": 3})
        assert outcome.error_type == "ToolTimeoutError", outcome.error_message
        assert (cluster.workspace(outcome.task_id) / "started").exists()
        await all_gone(markers)


async def test_escapees_die_at_the_tasks_timeout(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str
) -> None:
    code, markers = escapes("time.sleep(300)")
    config = cluster_config(nats_server, prefix, tmp_path, tool_settings(sandbox, tmp_path))
    async with start_cluster(config) as cluster:
        outcome = await cluster.run("python.exec", {"code": code}, timeout_s=4)
        assert outcome.state != TaskState.SUCCEEDED
        assert (cluster.workspace(outcome.task_id) / "started").exists()
        await all_gone(markers)


async def test_escapees_die_when_the_task_is_cancelled(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str
) -> None:
    code, markers = escapes("time.sleep(300)")
    config = cluster_config(nats_server, prefix, tmp_path, tool_settings(sandbox, tmp_path))
    async with start_cluster(config) as cluster:
        task_id = await cluster.submit("python.exec", {"code": code})
        workspace = cluster.workspace(task_id)
        await eventually(lambda: (workspace / "started").exists(), timeout_s=30, what="the escapes started")
        await eventually(lambda: all(marked(m) for m in markers), timeout_s=15, what="all three escapees alive")
        await cluster.client.cancel(task_id)
        outcome = await cluster.outcome(task_id)
        assert outcome.state == TaskState.CANCELLED
        await all_gone(markers)


async def test_escapees_die_when_the_code_exits_normally(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str
) -> None:
    code, markers = escapes("time.sleep(1)")  # setsid has run by then
    config = cluster_config(nats_server, prefix, tmp_path, tool_settings(sandbox, tmp_path))
    async with start_cluster(config) as cluster:
        outcome = await cluster.run("python.exec", {"code": code})
        assert outcome.state == TaskState.SUCCEEDED, outcome.error_message
        assert outcome.result["stdout"] == "escapes started\n"
        await all_gone(markers)


async def test_shell_exec_nohup_and_setsid_children_die_with_the_task(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str
) -> None:
    markers = [new_marker(), new_marker()]
    # The pause lets setsid run before sh exits (else the group kill of old catches it by luck).
    script = f"nohup sleep {markers[0]} >/dev/null 2>&1 & setsid sleep {markers[1]} & sleep 1; echo left"
    config = cluster_config(nats_server, prefix, tmp_path, tool_settings(sandbox, tmp_path))
    async with start_cluster(config) as cluster:
        outcome = await cluster.run("shell.exec", {"argv": ["sh", "-c", script]})
        assert outcome.state == TaskState.SUCCEEDED, outcome.error_message
        assert outcome.result["stdout"] == "left\n"
        await all_gone(markers)
