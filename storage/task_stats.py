"""Statistics over finished tasks: what `claw status` reports and the alerts judge."""

from __future__ import annotations

import sqlite3

from common.errors import StorageError
from common.models import WindowStats
from common.states import TaskState
from storage.database import Database

# The final states, in the order `claw status` lists them; a window counts tasks in these.
_FINISHED = [
    s.value for s in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED, TaskState.REJECTED)
]
P95_PERCENT = 95
# `+state` keeps SQLite from choosing the (state, task_id) index - for the filter or to group without a
# sort - which would visit every finished task ever; the range on the covering index (finished_at,
# state, started_at) visits only the window's (tests/unit/test_window_stats.py checks the plans).
WINDOW_COUNTS_SQL = (
    "SELECT state, COUNT(*) FROM tasks WHERE finished_at >= ? "
    f"AND +state IN ({','.join('?' for _ in _FINISHED)}) GROUP BY +state"
)
_WINDOW_SUCCESSES = "FROM tasks WHERE finished_at >= ? AND +state = 'succeeded' AND started_at IS NOT NULL"
WINDOW_RUN_TIMES_SQL = f"SELECT COUNT(*), AVG(finished_at - started_at) {_WINDOW_SUCCESSES}"
# The run time at a rank (0-based offset): SQLite sorts the window's run times, one row comes back.
WINDOW_RANK_SQL = f"SELECT finished_at - started_at AS ran_s {_WINDOW_SUCCESSES} ORDER BY ran_s LIMIT 1 OFFSET ?"


class TaskStatistics:
    """Aggregates over the tasks table (read connection)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def window_stats(self, *, since: float, window_s: float) -> WindowStats:
        """The tasks that finished at or after `since`: counts by final state, rates, run times.

        Every query is a range scan of the index `tasks_finished` (finished_at, state, started_at), so
        the cost follows the tasks in the window, not the table. The p95 is the nearest rank, read as
        one row at its offset after SQLite sorts the window's run times: exact, and no rows are
        loaded into Python.
        """
        try:
            rows = await self._db.fetch_all(WINDOW_COUNTS_SQL, (since, *_FINISHED))
            counted = await self._db.fetch_one(WINDOW_RUN_TIMES_SQL, (since,))
            timed, run_mean_s = (counted[0], counted[1]) if counted is not None else (0, None)
            run_p95_s = None
            if timed:
                row = await self._db.fetch_one(WINDOW_RANK_SQL, (since, nearest_rank(timed, P95_PERCENT) - 1))
                run_p95_s = None if row is None else row[0]
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the window statistics: {exc}") from exc
        return _window(rows, window_s, run_mean_s, run_p95_s)


def _window(rows: list[sqlite3.Row], window_s: float, run_mean_s: float | None, run_p95_s: float | None) -> WindowStats:
    counts = {r[0]: r[1] for r in rows}
    by_state = {state: counts[state] for state in _FINISHED if counts.get(state)}
    finished = sum(by_state.values())
    failures = by_state.get(TaskState.FAILED, 0) + by_state.get(TaskState.DEAD, 0)
    return WindowStats(
        window_s=window_s,
        finished=finished,
        by_state=by_state,
        completion_rate=by_state.get(TaskState.SUCCEEDED, 0) / finished if finished else None,
        failure_rate=failures / finished if finished else None,
        run_mean_s=run_mean_s,
        run_p95_s=run_p95_s,
    )


def nearest_rank(count: int, percent: int) -> int:
    """The 1-based rank of the `percent` percentile among `count` sorted values: ceil(count * p / 100),
    in integers so that no rounding moves it."""
    return max(1, -(-count * percent // 100))
