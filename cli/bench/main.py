"""Running the benchmark as a command: options, the event loop and signals, the table and the JSON."""

from __future__ import annotations

from collections.abc import Sequence

from cli.bench.measure import progress
from cli.bench.options import parse_args
from cli.bench.report import render_table
from cli.bench.run import bench
from cli.bench.script import run_and_emit
from cli.runner import run_interruptible
from common.config import LogSettings
from common.log import configure_logging


def main(argv: Sequence[str] | None = None, prog: str = "claw bench") -> int:
    """Run the benchmark, print the table, write the JSON; the process's exit code.

    Ctrl-C or SIGTERM stops it: every process it started is stopped (a second one kills them at once).
    """
    options = parse_args(argv, prog)
    # The client library logs connection events at info; the table is what this command prints.
    configure_logging(LogSettings(level="warning", format="console"), process="bench")
    code = run_and_emit(bench(options), render=render_table, json_path=options.json_path, runner=run_interruptible)
    if code == 0 and options.json_path is not None:
        progress(f"JSON written to {options.json_path}")
    return code
