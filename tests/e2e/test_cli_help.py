"""`claw ... --help` of every command, as a user's terminal shows it: one style, no stray marks, the
defaults shown, every command with `--json`, `claw --version`, and the benchmark's help alike."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from typing import Any

import pytest
import typer

from cli.main import app
from common import __version__
from tests.helpers import ROOT, child_env

pytestmark = pytest.mark.e2e

WIDTH = 100


def _walk(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    subs = getattr(cmd, "commands", {})
    if not subs:
        return [(path, cmd)]
    return [(path, cmd)] + [found for name, sub in subs.items() for found in _walk(sub, (*path, name))]


TREE = _walk(typer.main.get_command(app))
LEAVES = {path: cmd for path, cmd in TREE if not getattr(cmd, "commands", {})}
# `claw bench --json FILE` writes the figures to a file (the benchmark's own option).
WITHOUT_JSON_FLAG = {("bench",)}
# Defaults that come from the config or the environment, named in words.
NAMED_DEFAULTS = {
    ("worker", "start"): {"--skills": "all it can load", "--concurrency": "8", "--node-id": "<host>-<pid>"},
    ("coordinator", "start"): {"--db": ".claw/claw.db", "--metrics-port": "off"},
    ("submit",): {"--timeout": "the skill's, else 300", "--max-attempts": "the skill's, else 3"},
    (): {"--nats": "nats://127.0.0.1:4222"},
}


def claw(*args: str) -> subprocess.CompletedProcess[str]:
    """`claw ARGS` in a 100-column terminal's width."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=child_env(COLUMNS=str(WIDTH), TERMINAL_WIDTH=str(WIDTH)),
        capture_output=True,
        text=True,
        timeout=60,
    )


@functools.cache
def help_text(path: tuple[str, ...]) -> str:
    result = claw(*path, "--help")
    assert result.returncode == 0, result.stderr
    return result.stdout


def option_row(text: str, option: str) -> str:
    """The help row of `option`: its line and the wrapped lines under it, up to the next option."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"│\s+(\*\s+)?{re.escape(option)}\b", line))
    row = [lines[start]]
    for line in lines[start + 1 :]:
        if re.match(r"│\s+(\*\s+)?-", line) or not line.startswith("│"):
            break
        row.append(line)
    return " ".join(" ".join(line.strip("│ ").split()) for line in row)


@pytest.mark.parametrize("path", [path for path, _ in TREE], ids=lambda path: " ".join(path) or "claw")
def test_help_reads_cleanly(path: tuple[str, ...]) -> None:
    """No `<bool>` after flags, no " ." left by a swallowed `[default: x]`, 100 columns; every choice
    whole (not folded mid-word), every default shown, and `--json` on every command."""
    text = help_text(path)
    assert "<bool>" not in text
    assert not re.search(r"\s\.(\s|$)", text), re.search(r".*\s\.(\s|$).*", text)
    assert all(len(line) <= WIDTH for line in text.splitlines())
    for option, default in NAMED_DEFAULTS.get(path, {}).items():
        assert f"[default: ({default})]" in option_row(text, option)
    if path not in LEAVES or path in WITHOUT_JSON_FLAG:
        return
    options = [p for p in LEAVES[path].params if getattr(p, "param_type_name", "") == "option"]
    assert "--json" in [opt for param in options for opt in param.opts]
    for param in options:
        row = option_row(text, param.opts[0])
        descriptor = getattr(param, "type_descriptor", None)
        for choice in getattr(descriptor, "choices", None) or ():
            assert re.search(rf"\b{re.escape(str(choice.value))}\b", row), (param.opts[0], row)
        has_default = isinstance(param.show_default, str) or (param.default is not None and not param.is_flag)
        if has_default and not param.required:
            assert "[default:" in row, (param.opts[0], row)


def test_version_prints_the_package_version() -> None:
    result = claw("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"claw {__version__}\n"


def test_bench_help_looks_like_every_other_command() -> None:
    text = help_text(("bench",))
    assert "Usage: claw bench [OPTIONS]" in text
    assert "╭─ Options" in text and "options:" not in text  # typer's panels, not argparse's layout
    assert "[default: 50000; quick: 1000]" in option_row(text, "--n")  # not eaten as markup
    assert "Show this message and exit." in option_row(text, "--help")
    assert all(len(line) <= WIDTH for line in text.splitlines())
    short = claw("bench", "-h")
    assert short.returncode == 0 and short.stdout == text
