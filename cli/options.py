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
        help="Serve Prometheus metrics at :PORT/metrics (0: a free port) [default: off].",
        min=0,
        max=65535,
    ),
]
AsFlag = Annotated[str | None, typer.Option("--as", help="Who is deciding [default: the OS user].")]
