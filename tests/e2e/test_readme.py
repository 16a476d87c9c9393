"""End to end: the README's quick start, top to bottom, as a new user runs it.

`./scripts/up.sh` (the README's first command, on free ports and a data dir of the test's own) runs the
cluster on the event loop users get (uvloop); then every line of the README's second block runs as
written, through bash, with `<task-id>` replaced by the id the last `claw submit` above it printed, and
each must do what its comment says. A README line that breaks, or a new line without a check here,
fails this test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.e2e.test_up import BANNER, alive, free_ports, title
from tests.helpers import ROOT, child_env, wait_until

pytestmark = pytest.mark.e2e

README = ROOT / "README.md"
ID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")


def quick_start_lines() -> list[str]:
    """The commands of the README block that follows "With `./scripts/up.sh` running", comments cut."""
    text = README.read_text()
    block = text[text.index("With `./scripts/up.sh` running") :]
    start = block.index("```bash\n") + len("```bash\n")
    block = block[start : block.index("\n```", start)]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


@dataclass
class Session:
    """The user's second terminal: where the cluster is, and the last task id a submit printed."""

    env: dict[str, str]
    task_id: str | None = None
    outputs: list[str] = field(default_factory=list)

    def run(self, line: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        if "<task-id>" in line:
            assert self.task_id, f"{line!r} needs a task id, but no submit above it printed one"
            line = line.replace("<task-id>", self.task_id)
        result = subprocess.run(
            ["bash", "-c", line], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout_s
        )
        self.outputs.append(f"$ {line}\n(exit {result.returncode})\n{result.stdout}{result.stderr}")
        if line.startswith("claw submit"):
            found = ID.findall(result.stdout + result.stderr)
            assert found, f"{line!r} printed no task id:\n{self.outputs[-1]}"
            self.task_id = found[0]
        return result

    def state(self, task_id: str) -> str:
        shown = subprocess.run(
            ["claw", "task", "show", task_id, "--json"], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        return str(json.loads(shown.stdout)["state"]) if shown.returncode == 0 else f"error: {shown.stderr}"


Check = Callable[[Session, subprocess.CompletedProcess[str]], None]


def ok(*needles: str) -> Check:
    """Exit 0 and every needle in the output."""

    def check(session: Session, result: subprocess.CompletedProcess[str]) -> None:
        out = result.stdout + result.stderr
        assert result.returncode == 0, session.outputs[-1]
        for needle in needles:
            assert needle.replace("<task-id>", session.task_id or "") in out, (needle, session.outputs[-1])

    return check


def then_state(state: str, *needles: str) -> Check:
    """Exit 0, the needles, and the last submitted task reaches `state` (the README's comment says so)."""
    first = ok(*needles)

    def check(session: Session, result: subprocess.CompletedProcess[str]) -> None:
        first(session, result)
        task_id = session.task_id or ""
        wait_until(lambda: session.state(task_id) == state, timeout_s=90, what=f"{task_id} {state}")

    return check


def both(*checks: Check) -> Check:
    def check(session: Session, result: subprocess.CompletedProcess[str]) -> None:
        for each in checks:
            each(session, result)

    return check


def nodes_online(count: int) -> Check:
    def check(session: Session, result: subprocess.CompletedProcess[str]) -> None:
        assert result.returncode == 0 and result.stdout.count("online") >= count, session.outputs[-1]

    return check


# What each README line must do, by its command (the line as written, before `<task-id>` is replaced).
CHECKS: dict[str, Check] = {
    "source .venv/bin/activate": ok(),
    'claw submit echo --input \'{"hello": "world"}\' --wait': ok('"hello"', '"world"'),
    "claw submit sleep --input '{\"seconds\": 5}'": ok("<task-id>"),
    "claw task watch <task-id>": ok("sleeping", "succeeded"),
    "claw task show <task-id>": ok("<task-id>", "succeeded", "slept_s", "timeline"),
    "claw task list": ok("<task-id>", "sleep", "echo"),
    "claw artifacts list <task-id>": ok(),
    "claw nodes": nodes_online(2),
    "claw status --window 15m": ok("2 online of 2", "2 succeeded"),
    "claw submit sleep --input '{\"seconds\": 600}'": then_state("running", "<task-id>"),
    "claw task cancel <task-id>": then_state("cancelled", "<task-id>"),
    'claw submit fail --input \'{"message": "x", "retryable": true}\' --max-attempts 3': then_state("dead"),
    "claw dlq list": ok("<task-id>", "fail"),
    "claw dlq replay <task-id>": ok("<task-id>"),
    "claw skills install examples/skills/text_stats": ok("text.stats", "2 of 2"),
    "claw submit text.stats --input-file examples/skills/text_stats/example_input.json --wait": ok("words"),
    'claw submit http.request --input \'{"url": "https://example.com"}\'': both(
        ok("waiting_approval", "held by guard rule", "claw approve <task-id>"), then_state("waiting_approval")
    ),
    "claw approvals": ok("<task-id>", "http.request"),
    "claw approve <task-id>": ok("<task-id>"),
    "claw audit verify": ok("intact"),
}


@dataclass
class UpSh:
    """The running up.sh: its NATS URL and the local admin's credentials it wrote."""

    url: str
    creds: str


@pytest.fixture
def up_sh(tmp_path: Path) -> Iterator[UpSh]:
    """`./scripts/up.sh` on free ports with its data under `tmp_path`; its NATS URL. Stopped with Ctrl-C
    (SIGINT, as a user would) at the end, and nothing it started may outlive it."""
    nats_port, monitor_port = free_ports(2)
    log_path = tmp_path / "up.log"
    args = ["--data-dir", str(tmp_path / "claw"), "--nats-port", str(nats_port), "--monitor-port", str(monitor_port),
            "--gateway", "127.0.0.1:0"]  # fmt: skip
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            [str(ROOT / "scripts" / "up.sh"), *args],
            cwd=ROOT, env=child_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    started: list[psutil.Process] = []
    try:
        found = wait_until(lambda: BANNER.search(log_path.read_text()), timeout_s=180, what="the banner of up.sh")
        started = psutil.Process(popen.pid).children(recursive=True)
        services = [p for p in started if "claw coordinator" in title(p) or "claw worker" in title(p)]
        assert len(services) == 3, [title(p) for p in started]
        for service in services:  # the loop users run: uvloop, where it is installed
            assert any("uvloop" in m.path for m in service.memory_maps()), title(service)
        banner = log_path.read_text()
        assert f"credentials: {tmp_path / 'claw' / 'auth' / 'admin.creds'}" in banner
        # The README's dashboard paragraph: the URL, the admin key and the two ways to more logins.
        assert f"(log in with the API key in {tmp_path / 'claw' / 'admin.key'};" in banner, banner
        assert (
            f"claw creds create NAME --role viewer,submitter --http --auth-dir {tmp_path / 'claw' / 'auth'}" in banner
        )
        assert "claw gateway key create --name NAME --roles viewer,submitter" in banner
        yield UpSh(found.group(1), str(tmp_path / "claw" / "auth" / "admin.creds"))
        popen.send_signal(2)  # Ctrl-C
        assert popen.wait(90) == 0, log_path.read_text()
        wait_until(lambda: not [p for p in started if alive(p)], timeout_s=30, what="the cluster to stop")
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
        for process in started:
            if alive(process):
                process.kill()


def test_every_readme_quick_start_line_does_what_it_says(up_sh: UpSh) -> None:
    lines = quick_start_lines()
    assert lines[0] == "source .venv/bin/activate" and len(lines) == len(CHECKS), lines
    venv_bin = str(Path(sys.executable).parent)
    # The banner's advice for a data dir other than ./.claw: CLAW_CREDS names the admin's credentials.
    creds = up_sh.creds
    session = Session(
        env=child_env(PATH=f"{venv_bin}{os.pathsep}{os.environ['PATH']}", CLAW_NATS_URL=up_sh.url, CLAW_CREDS=creds)
    )
    for line in lines:
        assert line in CHECKS, f"a README line without a check in this test: {line!r}"
        if line.startswith("source "):
            continue  # the test runs the venv's `claw` directly: the same as an activated venv
        result = session.run(line)
        CHECKS[line](session, result)
    transcript = "\n".join(session.outputs)
    assert "Traceback" not in transcript, transcript


def test_the_quick_start_block_is_parsed_as_the_user_sees_it() -> None:
    """Guards the parser above: every line is one shell command that bash accepts as written."""
    for line in quick_start_lines():
        shlex.split(line)
        assert not line.startswith("#") and "<" not in line.replace("<task-id>", ""), line
