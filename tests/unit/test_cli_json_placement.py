"""`claw --json status`: the README says every command prints JSON with `--json`, and a user puts it
before the command. The error says where it goes (one JSON line, exit 2), not click's guess
"Possible options: --version"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _claw(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_json_before_the_command_says_it_goes_after_it() -> None:
    done = _claw("--nats", "nats://127.0.0.1:1", "--json", "status")
    assert done.returncode == 2
    assert done.stdout == ""
    error = json.loads(done.stderr.strip().splitlines()[-1])
    assert error == {"error": "--json goes after the command, not before it: e.g. `claw status --json`",
                     "code": "usage"}  # fmt: skip


def test_json_on_a_group_without_it_is_still_an_unknown_option() -> None:
    done = _claw("task", "--json")
    assert done.returncode == 2
    assert json.loads(done.stderr.strip().splitlines()[-1]) == {"error": "No such option: --json", "code": "usage"}
