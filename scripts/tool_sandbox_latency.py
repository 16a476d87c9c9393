"""What the tool sandbox costs one python.exec call: the median wall time of N calls of `pass`, per
sandbox mode, calling the handler directly (no cluster) on uvloop, one call at a time.

    python scripts/tool_sandbox_latency.py [--calls 50]

Run it from a checkout of an older commit too (settings that version lacks are left out) to compare
with python.exec before the sandbox. docs/Tool_skills.md has the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
import uvloop

from common.config import ToolSettings
from tests.helpers import task_context
from worker.skills.tools.python_exec import PythonTool

MODES: dict[str, dict[str, Any]] = {
    "bwrap + cgroup (default here)": {"sandbox_bwrap": "require", "sandbox_cgroups": True},
    "bwrap, watchdog": {"sandbox_bwrap": "require", "sandbox_cgroups": False},
    "launcher + cgroup, no bwrap": {"sandbox_bwrap": "off", "sandbox_cgroups": True},
    "launcher, watchdog, no bwrap": {"sandbox_bwrap": "off", "sandbox_cgroups": False},
}


async def median_ms(settings: ToolSettings, calls: int) -> float:
    """The median duration of `calls` python.exec calls of `pass` (after three to warm up)."""
    tool = PythonTool(settings)
    durations = []
    for index in range(calls + 3):
        started = time.perf_counter()
        result = await tool.exec(task_context("python.exec"), {"code": "pass", "workspace": "latency"})
        if result["exit_code"] != 0:
            raise SystemExit(f"python.exec failed: {result['stderr']}")
        if index >= 3:
            durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1000


async def main(calls: int) -> None:
    known = {field.name for field in msgspec.structs.fields(ToolSettings)}
    with tempfile.TemporaryDirectory() as root:
        if "sandbox_bwrap" not in known:
            unsandboxed = await median_ms(ToolSettings(sandbox_root=root), calls)
            print(f"no sandbox (this version has none): {unsandboxed:.1f} ms")
            return
        for name, fields in MODES.items():
            settings = ToolSettings(sandbox_root=root, **fields)
            try:
                print(f"{name}: {await median_ms(settings, calls):.1f} ms")
            except Exception as exc:  # noqa: BLE001 - a mode this machine lacks is reported, not fatal
                print(f"{name}: not available here ({type(exc).__name__}: {exc})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    uvloop.run(main(parser.parse_args().calls))
