"""The progress bar of `claw submit --wait` for a batch: done/failed/total, rate and ETA, on stderr.

Drawn with rich (already what typer renders help with) and only on a terminal: a pipe or a log file
gets the final summary line alone, and so does `--json`.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text


class RateColumn(ProgressColumn):
    """Tasks finished per second, over rich's recent window."""

    def render(self, task: Task) -> Text:
        """'12.5 tasks/s', or '- tasks/s' before the first finishes."""
        speed = task.finished_speed or task.speed
        return Text("- tasks/s" if not speed else f"{speed:.1f} tasks/s")


class BatchProgress:
    """A bar over `total` tasks; `advance()` as each ends. Does nothing when not `enabled`."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._failed = 0
        if enabled:
            self._progress = Progress(
                TextColumn("waiting"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("done, {task.fields[failed]} failed"),
                RateColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._task = self._progress.add_task("tasks", total=total, failed=0)

    def advance(self, *, failed: bool) -> None:
        """One more task ended (and it did not succeed, when `failed`)."""
        self._failed += failed
        if self._progress is not None:
            self._progress.update(self._task, advance=1, failed=self._failed)

    def __enter__(self) -> BatchProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
