"""Running the benchmark as a command: options, the event loop and signals, the table and the JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from cli.bench.measure import progress
from cli.bench.options import parse_args
from cli.bench.report import render_table
from cli.bench.run import bench
from cli.runner import run_interruptible
from common.config import LogSettings
from common.errors import ClawError
from common.log import configure_logging


def main(argv: Sequence[str] | None = None, prog: str = "claw bench") -> int:
    """Run the benchmark, print the table, write the JSON; the process's exit code.

    Ctrl-C or SIGTERM stops it: every process it started is stopped (a second one kills them at once).
    """
    options = parse_args(argv, prog)
    # The client library logs connection events at info; the table is what this command prints.
    configure_logging(LogSettings(level="warning", format="console"), process="bench")
    try:
        report = run_interruptible(bench(options))
    except ClawError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; every process the benchmark started is stopped\n")
        return 130
    print(render_table(report))
    if options.json_path is not None:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(report, indent=2) + "\n")
        progress(f"JSON written to {options.json_path}")
    return 0
