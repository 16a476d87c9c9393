"""Probes: a task's code reaching for the worker's secrets and files.

From python.exec (and shell.exec), read the worker's /proc (environment, memory, open files), the
parent's, its own environment, files outside the workspace (the database, a credentials file), or
pull one in through a hard link, a symlink, `..`, an absolute path or /proc/self/root. Each must
fail, and no secret may reach the stored result. The worker here runs in this process; the
end-to-end file runs a real `claw worker` with its secrets in its environment.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from common.states import TaskState
from communication.nats_server import EmbeddedNatsServer
from tests.security.conftest import cluster_config, start_cluster, tool_settings

SECRETS = {
    "OPENAI_API_KEY": "sk-probe-openai-5f1e0c",
    "DATABASE_URL": "postgresql://claw:pw-probe-db-77a1@db.internal/claw",
    "NATS_PASSWORD": "pw-probe-nats-90b3",
}
CREDENTIALS = "-----BEGIN NATS USER JWT-----\nprobe-creds-3c4d\n"
SHELL_OWN = {"PWD", "OLDPWD", "SHLVL", "_"}  # what sh sets itself
ALLOWED = {"HOME", "LANG", "PATH", "TMPDIR"}
FAILED = ("PermissionError", "FileNotFoundError", "ProcessLookupError", "OSError")

# The code of the probe: every read is tried, and what each gave (or the exception's name) printed.
PROC_PROBE = """
import json, os
worker = {worker}
report = {{}}
def attempt(name, read):
    try:
        report[name] = read()
    except Exception as exc:
        report[name] = type(exc).__name__
def text(path):
    with open(path, "rb") as file:
        return file.read(100000).decode(errors="replace")
attempt("worker_environ", lambda: text(f"/proc/{{worker}}/environ"))
attempt("worker_mem", lambda: text(f"/proc/{{worker}}/mem"))
attempt("worker_maps", lambda: text(f"/proc/{{worker}}/maps"))
attempt("worker_fds", lambda: os.listdir(f"/proc/{{worker}}/fd"))
attempt("worker_cmdline", lambda: text(f"/proc/{{worker}}/cmdline"))
attempt("self_environ", lambda: sorted(v.split("=")[0] for v in text("/proc/self/environ").split("\\0") if v))
attempt("environ", lambda: dict(os.environ))
parents, pid = [], os.getppid()
while pid > 1:
    attempt(f"environ_of_{{pid}}", lambda: text(f"/proc/{{pid}}/environ"))
    parents.append(report[f"environ_of_{{pid}}"])
    pid = int(text(f"/proc/{{pid}}/status").split("PPid:")[1].split()[0])
report["parents"] = parents
print(json.dumps(report))
"""


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


async def test_python_exec_cannot_read_the_workers_proc_or_environment(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str, secrets_in_env: None
) -> None:
    config = cluster_config(nats_server, prefix, tmp_path, tool_settings(sandbox, tmp_path))
    async with start_cluster(config) as cluster:
        outcome = await cluster.run("python.exec", {"code": PROC_PROBE.format(worker=os.getpid())})
    assert outcome.state == TaskState.SUCCEEDED, outcome.error_message
    stored = json.dumps(outcome.result)
    assert not [value for value in SECRETS.values() if value in stored]
    report = json.loads(outcome.result["stdout"])
    for name in ("worker_environ", "worker_mem", "worker_maps", "worker_fds"):
        assert report[name] in FAILED, f"{name} was readable: {str(report[name])[:200]}"
    # A process that became the sandbox user without an exec cannot even read its own /proc; bwrap
    # sets PWD in the environment it starts with.
    assert report["self_environ"] == "PermissionError" or set(report["self_environ"]) - {"PWD"} == ALLOWED
    assert set(report["environ"]) == ALLOWED
    if os.geteuid() == 0:  # another user: the launcher and bwrap (root) too are out of reach
        assert all(parent in FAILED for parent in report["parents"]), report["parents"]
    if sandbox == "bwrap":  # its own PID namespace: the worker is not there at all
        assert report["worker_cmdline"] in FAILED


async def test_shell_exec_cannot_read_the_workers_environment(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str, secrets_in_env: None
) -> None:
    config = cluster_config(nats_server, prefix, tmp_path, tool_settings(sandbox, tmp_path))
    script = f"cat /proc/{os.getpid()}/environ; echo; echo ---; env"
    async with start_cluster(config) as cluster:
        outcome = await cluster.run("shell.exec", {"argv": ["sh", "-c", script]})
    assert outcome.state == TaskState.SUCCEEDED, outcome.error_message
    assert not [value for value in SECRETS.values() if value in json.dumps(outcome.result)]
    assert "Permission denied" in outcome.result["stderr"] or "No such file" in outcome.result["stderr"]
    printed = outcome.result["stdout"].split("---\n", 1)[1]
    variables = {line.split("=", 1)[0] for line in printed.splitlines() if "=" in line}
    assert variables - SHELL_OWN == ALLOWED


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A credentials file of the worker's (mode 0600) outside every workspace."""
    creds = tmp_path / "worker.creds"
    creds.write_text(CREDENTIALS)
    creds.chmod(0o600)
    return creds


async def test_hard_links_out_of_a_workspace_are_refused_for_reads_and_appends(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str, outside: Path
) -> None:
    config = cluster_config(nats_server, prefix, tmp_path, tool_settings(sandbox, tmp_path))
    async with start_cluster(config) as cluster:
        await cluster.run("fs.write", {"workspace": "w1", "path": "mine.txt", "content": "mine"})
        workspace = cluster.workspace("w1")
        os.link(outside, workspace / "notes.txt")  # a link another process made
        os.link(workspace / "mine.txt", workspace / "mine-too.txt")  # both names inside
        read = await cluster.run("fs.read", {"workspace": "w1", "path": "notes.txt"})
        append = await cluster.run("fs.write", {"workspace": "w1", "path": "notes.txt", "content": "x", "append": True})
        inside = await cluster.run("fs.read", {"workspace": "w1", "path": "mine-too.txt"})
    for refused in (read, append):
        assert refused.state != TaskState.SUCCEEDED
        assert "has 2 hard links, some outside the sandbox; refused" in (refused.error_message or "")
        assert CREDENTIALS not in json.dumps(refused.result)
    assert await asyncio.to_thread(outside.read_text) == CREDENTIALS
    assert inside.state == TaskState.SUCCEEDED and inside.result["content"] == "mine"


async def test_symlinks_dot_dot_absolute_and_proc_root_paths_are_refused(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str, outside: Path
) -> None:
    config = cluster_config(nats_server, prefix, tmp_path, tool_settings(sandbox, tmp_path))
    async with start_cluster(config) as cluster:
        await cluster.run("fs.mkdir", {"workspace": "w1", "path": "d"})
        workspace = cluster.workspace("w1")
        (workspace / "via-proc").symlink_to(f"/proc/self/root{outside}")
        (workspace / "link").symlink_to(outside)
        tries = [
            {"path": "via-proc"},
            {"path": "link"},
            {"path": f"../../{outside.name}"},
            {"path": f"d/../../../{outside.name}"},
            {"path": str(outside)},
            {"path": f"/proc/self/root{outside}"},
        ]
        outcomes = [await cluster.run("fs.read", {"workspace": "w1", **path}) for path in tries]
    for path, outcome in zip(tries, outcomes, strict=True):
        assert outcome.state != TaskState.SUCCEEDED, path
        assert CREDENTIALS not in json.dumps(outcome.result), path


FILE_PROBE = """
import json, os
report = {{}}
for name, path in (("creds", {creds!r}), ("db", {db!r})):
    try:
        with open(path, "rb") as file:
            report[name] = file.read().decode(errors="replace")
    except Exception as exc:
        report[name] = type(exc).__name__
try:
    os.link({creds!r}, "linked")
    report["link"] = open("linked").read()
except Exception as exc:
    report["link"] = type(exc).__name__
print(json.dumps(report))
"""


async def test_python_exec_cannot_read_or_link_the_workers_files(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str, outside: Path
) -> None:
    if sandbox == "none" and os.geteuid() != 0:
        pytest.skip("without bwrap a non-root worker's tool processes are its own user: its files are theirs")
    config = cluster_config(nats_server, prefix, tmp_path, tool_settings(sandbox, tmp_path))
    async with start_cluster(config) as cluster:
        code = FILE_PROBE.format(creds=str(outside), db=str(config.coordinator.db_path))
        outcome = await cluster.run("python.exec", {"code": code})
    assert outcome.state == TaskState.SUCCEEDED, outcome.error_message
    report = json.loads(outcome.result["stdout"])
    assert report == {"creds": report["creds"], "db": report["db"], "link": report["link"]}
    assert all(value in FAILED for value in report.values()), report
    assert CREDENTIALS not in json.dumps(outcome.result)


IDENTITY = """
import os
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())
print(status["NoNewPrivs"].strip(), status["CapEff"].strip(), status["CapPrm"].strip())
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
print([fd for fd in range(3, 1024) if is_open(fd)])
open("made-by-the-code", "w").close()
"""


async def test_tool_processes_run_unprivileged_in_a_private_workspace(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the worker is not root: its tool processes run as its own user")
    config = cluster_config(nats_server, prefix, tmp_path, tool_settings(sandbox, tmp_path))
    async with start_cluster(config) as cluster:
        code = await cluster.run("python.exec", {"code": IDENTITY, "workspace": "w1"})
        program = await cluster.run("shell.exec", {"argv": ["sh", "-c", "id -u; grep NoNewPrivs /proc/self/status"]})
        written = await cluster.run("fs.write", {"workspace": "w1", "path": "by-fs-write", "content": "x"})
        workspace = cluster.workspace("w1")
        sandbox_root = workspace.parent
    assert (code.state, program.state, written.state) == (TaskState.SUCCEEDED,) * 3
    # No capabilities, no way to gain privileges, no descriptor of the worker's left open.
    assert code.result["stdout"].splitlines() == ["65534 65534 65534 []", "1 0000000000000000 0000000000000000", "[]"]
    assert program.result["stdout"].split() == ["65534", "NoNewPrivs:", "1"]
    # Private to the sandbox user, which owns what the code and the fs skills made in it.
    assert (workspace.stat().st_uid, workspace.stat().st_mode & 0o777) == (65534, 0o700)
    assert sandbox_root.stat().st_mode & 0o777 == 0o711
    assert {(workspace / name).stat().st_uid for name in ("made-by-the-code", "by-fs-write")} == {65534}


NETWORK = """
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""


async def test_python_exec_has_no_network_inside_bwrap(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, sandbox: str
) -> None:
    """The NATS port on loopback: inside bwrap the code has a loopback of its own."""
    if sandbox != "bwrap":
        pytest.skip("without bwrap tool processes share the worker's network (docs/Tool_skills.md)")
    port = int(nats_server.client_url.rsplit(":", 1)[1])
    shared = tool_settings(sandbox, tmp_path, sandbox_network=True, sandbox_root=str(tmp_path / "shared"))
    for tools, expected in ((tool_settings(sandbox, tmp_path), "ConnectionRefusedError"), (shared, "connected")):
        config = cluster_config(nats_server, f"{prefix}{expected[0].lower()}", tmp_path, tools)
        async with start_cluster(config) as cluster:
            outcome = await cluster.run("python.exec", {"code": NETWORK.format(port=port)})
        assert outcome.result["stdout"] == f"{expected}\n", outcome.error_message
