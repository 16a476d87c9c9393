"""The tail every benchmark command shares (`claw bench` and scripts/bench_*.py): its `--json FILE`
option, running the measurement, printing the report (a table, a summary or the JSON), writing the
JSON, and the exit code: 0, 1 with one line on a `ClawError`, 130 on Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from common.errors import ClawError

Report = dict[str, Any]
Renderer = Callable[[Report], str]


def as_json(report: Report) -> str:
    """The report as the JSON the scripts print and write."""
    return json.dumps(report, indent=2)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """`--json FILE` (as `args.json_path`): also write the report there."""
    parser.add_argument(
        "--json", dest="json_path", type=Path, metavar="FILE", help="also write the figures as JSON to FILE"
    )


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory for one run's servers and files, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def emit(report: Report, *, render: Renderer | None = as_json, json_path: Path | None = None) -> None:
    """Print `render(report)` (nothing when `render` is None) and write the report as JSON to `json_path`."""
    if render is not None:
        print(render(report))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(as_json(report) + "\n")


def run_and_emit(
    measure: Coroutine[Any, Any, Report],
    *,
    render: Renderer | None = as_json,
    json_path: Path | None = None,
    runner: Callable[[Coroutine[Any, Any, Report]], Report] = asyncio.run,
) -> int:
    """Run `measure` with `runner`, then `emit` its report; the process's exit code.

    Ctrl-C cancels `measure`, whose `finally` blocks stop what it started: 130, and a line saying so.
    """
    try:
        report = runner(measure)
    except ClawError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; every process the benchmark started is stopped\n")
        return 130
    emit(report, render=render, json_path=json_path)
    return 0
