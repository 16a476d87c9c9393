"""Options that several commands share, declared once so they read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AllFlag = Annotated[bool, typer.Option("--all", help="Every item, however many (fetched page by page).")]
ConfigFlag = Annotated[Path | None, typer.Option("--config", help="YAML config file (also $CLAW_CONFIG).")]
MetricsPortFlag = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve Prometheus metrics at :PORT/metrics (0: a free port).",
        min=0,
        max=65535,
        show_default="off",
    ),
]
# Long-running processes print log lines, not answers: --json makes them JSON lines even on a terminal.
LogJsonFlag = Annotated[
    bool, typer.Option("--json", help="Log JSON lines, also on a terminal (like log.format: json).")
]
