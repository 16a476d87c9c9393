"""The tool probes end to end: a real `claw worker` (on uvloop, as users run it) started with the
NATS password and token, an OpenAI key and a database DSN in its environment, and tasks submitted
with `claw submit`. The code reads the worker's /proc (environment, command line, memory), its
parents' and its own environment; the secrets must be in neither the stored result nor the printed
one. A setsid grandchild must not outlive the task's timeout.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from tests.helpers import ProcessPool, wait_until
from tests.security.conftest import BWRAP_SKIP
from tests.tool_processes import marked, new_marker

pytestmark = pytest.mark.e2e

SECRETS = {
    "CLAW_NATS_USER": "claw",
    "CLAW_NATS_PASSWORD": "pw-e2e-nats-1d9f",
    "CLAW_NATS_TOKEN": "tok-e2e-nats-6b2e",
    "OPENAI_API_KEY": "sk-e2e-openai-a7c3",
    "DATABASE_URL": "postgresql://claw:pw-e2e-db-4e8b@db.internal/claw",
}
SECRET_VALUES = [value for name, value in SECRETS.items() if name != "CLAW_NATS_USER"]
FAILED = ("PermissionError", "FileNotFoundError")


def scan_memory(pid: int | str) -> list[str]:
    """`NAME=value` of the secrets' variables found in a process's writable memory (the worker
    renames itself, which moves its environment off the block /proc/<pid>/environ shows)."""
    names = ("CLAW_NATS_PASSWORD=", "CLAW_NATS_TOKEN=", "OPENAI_API_KEY=", "DATABASE_URL=")
    pattern = re.compile(b"(?:" + b"|".join(re.escape(n.encode()) for n in names) + b")[\x21-\x7e]+")
    found: set[str] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            if not perms.startswith("rw") or end - start > 1 << 28:
                continue
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except OSError:
                continue
            found.update(match.decode() for match in pattern.findall(chunk))
    return sorted(found)


# The task's code (after scan_memory): every read tried, and what each gave (or the exception's name).
PROBE = """
def text(path):
    with open(path, "rb") as file:
        return file.read(200000).decode(errors="replace")
report = {{}}
targets = {{"worker": {worker}, "self": "self"}}
pid = os.getppid()
while pid > 1:
    targets[f"parent {{pid}}"] = pid
    pid = int(text(f"/proc/{{pid}}/status").split("PPid:")[1].split()[0])
for name, target in targets.items():
    for part in ("environ", "cmdline"):
        try:
            report[f"{{name}} {{part}}"] = text(f"/proc/{{target}}/{{part}}")
        except Exception as exc:
            report[f"{{name}} {{part}}"] = type(exc).__name__
try:
    report["worker memory"] = scan_memory({worker})
except Exception as exc:
    report["worker memory"] = type(exc).__name__
report["os.environ"] = dict(os.environ)
print(json.dumps(report))
"""


def probe(worker: int) -> str:
    """The probe's code, aimed at the worker's pid."""
    return "import json, os, re\n" + inspect.getsource(scan_memory) + PROBE.format(worker=worker)


SETSID = """
import subprocess, time
subprocess.Popen(["setsid", "sleep", "{marker}"])
time.sleep(300)
"""


def start(processes: ProcessPool, tmp_path: Path, sandbox: str) -> int:
    """A coordinator whose guard lets the probes run and a worker holding the secrets; its pid."""
    policy = tmp_path / "guard.yaml"
    policy.write_text("rules: []\ndefault: allow\n")
    processes.spawn("coordinator", "coordinator", "start", env={"CLAW_COORDINATOR_GUARD_POLICY": str(policy)})
    tools = {"CLAW_TOOLS_SANDBOX_BWRAP": "require" if sandbox == "bwrap" else "off", "CLAW_TOOLS_SHELL_ALLOW": "sh"}
    worker = processes.spawn("worker", "worker", "start", "--node-id", "w1", env=SECRETS | tools)

    def online() -> bool:
        listed = processes.run("nodes", "--json")
        return listed.returncode == 0 and any(n["status"] == "online" for n in json.loads(listed.stdout))

    wait_until(online, timeout_s=60, interval_s=0.3, what="the worker online")
    return worker.pid


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_a_claw_worker_keeps_its_secrets_from_python_exec(processes: ProcessPool, tmp_path: Path, sandbox: str) -> None:
    if sandbox == "bwrap" and BWRAP_SKIP:
        pytest.skip(BWRAP_SKIP)
    worker = start(processes, tmp_path, sandbox)
    # What the probe looks for is there to be found, by a process allowed to look.
    assert {line.split("=", 1)[1] for line in scan_memory(worker)} >= set(SECRET_VALUES)
    code = probe(worker)
    submitted = processes.run("submit", "python.exec", "--input", json.dumps({"code": code}), "--wait", "--json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    (task,) = json.loads(submitted.stdout)
    shown = processes.run("task", "show", task["task_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert not [value for value in SECRET_VALUES if value in submitted.stdout or value in shown.stdout]
    report = json.loads(task["result"]["stdout"])
    assert report["worker environ"] in FAILED
    assert report["worker memory"] in FAILED
    assert set(report["os.environ"]) == {"HOME", "LANG", "PATH", "TMPDIR"}
    if sandbox == "bwrap":
        assert report["worker cmdline"] in FAILED


def test_a_setsid_grandchild_does_not_outlive_the_tasks_timeout(processes: ProcessPool, tmp_path: Path) -> None:
    """In the default sandbox mode (bwrap where it runs)."""
    start(processes, tmp_path, "bwrap" if not BWRAP_SKIP else "none")
    marker = new_marker()
    code = SETSID.format(marker=marker)
    submit = processes.spawn(
        "submit", "submit", "python.exec", "--input", json.dumps({"code": code}), "--timeout", "5",
        "--max-attempts", "1", "--wait", "--json",
    )  # fmt: skip
    wait_until(lambda: marked(marker), timeout_s=60, what="the setsid grandchild started")
    assert submit.popen.wait(timeout=60) == 1, submit.output()
    assert '"error_type": "TaskTimeoutError"' in submit.output()
    wait_until(lambda: not marked(marker), timeout_s=15, what="the setsid grandchild gone")
