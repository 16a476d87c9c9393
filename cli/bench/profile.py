"""`claw bench --profile DIR`: py-spy samples the coordinator and one worker during a throughput run.

py-spy (`pip install py-spy`) attaches to a running process by its pid and needs no change to the
code it samples; `--nonblocking` keeps it from pausing the process at each sample. It writes
collapsed stacks (`--format raw`, the input of flamegraph.pl and speedscope), which `summarise`
turns into the functions that use the most CPU: by own time (the frame at the top of the stack)
and by inclusive time (anywhere on the stack). Idle samples (waiting in the event loop's poll) are
left out by py-spy, so the percentages are of the time the process was busy.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from cli.bench.errors import BenchError
from cli.processes import Child, Launcher

SAMPLE_RATE_HZ = 200
STOP_TIMEOUT_S = 30.0
_LINE_NUMBER = re.compile(r":\d+\)$")
# Frames every sample of a thread passes through (start-up, the CLI, the loop runner): left out of
# the inclusive ranking, where they would only fill the top. `Runner.run` keeps its own time, which
# is time spent inside uvloop's C code (polling, reading sockets, running callbacks).
_ENTRY_FILES = (
    "<frozen runpy>",
    "typer/",
    "cli/main.py",
    "cli/commands/",
    "cli/runner.py",
    "cli/__main__.py",
    "uvloop/__init__.py",
    "threading.py",
    "asyncio/runners.py",
)


def find_py_spy() -> str:
    """The py-spy executable: beside this Python (a venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise BenchError("--profile needs py-spy: `pip install py-spy` (in the same virtualenv)")
    return found


class Profiler:
    """One `py-spy record` per target process, started and stopped around a measured run."""

    def __init__(self, launcher: Launcher, out_dir: Path, targets: dict[str, int]) -> None:
        self._launcher = launcher
        self._out_dir = out_dir
        self._targets = targets
        self._running: dict[str, Child] = {}

    def output(self, name: str) -> Path:
        """The collapsed-stack file of target `name`."""
        return self._out_dir / f"{name}.collapsed.txt"

    def start(self) -> None:
        """Attach py-spy to every target."""
        py_spy = find_py_spy()
        self._out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self._targets.items():
            argv = [py_spy, "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE_HZ), "--nonblocking"]
            argv += ["--format", "raw", "--output", str(self.output(name))]
            log_path = self._out_dir / f"{name}.py-spy.log"
            self._running[name] = self._launcher.spawn(f"py-spy-{name}", argv, log_path=log_path)

    def stop(self) -> dict[str, Path]:
        """Stop sampling (py-spy writes its file on SIGINT); returns the summary file of each target."""
        for child in self._running.values():
            child.signal(signal.SIGINT)
        summaries = {}
        for name, child in self._running.items():
            try:
                child.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
            collapsed = self.output(name)
            if collapsed.exists():
                summary = self._out_dir / f"{name}.top.txt"
                summary.write_text(summarise(collapsed.read_text()))
                summaries[name] = summary
        self._running.clear()
        return summaries


def summarise(collapsed: str, top: int = 25) -> str:
    """The `top` functions by own and by inclusive share of the samples, from collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if not any(f"({name}" in frame for name in _ENTRY_FILES):
                inclusive[frame] += count
    if total == 0:
        return "no samples\n"
    lines = [f"{total} busy samples at {SAMPLE_RATE_HZ} Hz", "", "own time (top of stack):"]
    lines += [f"  {100 * n / total:5.1f} %  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "inclusive time (anywhere on the stack; start-up and loop-runner frames left out):"]
    lines += [f"  {100 * n / total:5.1f} %  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"
