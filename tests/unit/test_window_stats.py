"""Window statistics from SQLite (real file): counts, rates, an exact p95, and the index that serves them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.ids import new_id
from common.states import Priority, TaskState
from storage.database import Database
from storage.records import TaskRecord, WriteBatch
from storage.task_stats import WINDOW_COUNTS_SQL, WINDOW_RANK_SQL, WINDOW_RUN_TIMES_SQL, TaskStatistics
from storage.task_writer import TaskWriter

NOW = 1_700_000_000.0


def finished_task(state: TaskState, *, finished_at: float, ran_s: float | None = 1.0) -> TaskRecord:
    return TaskRecord(
        task_id=new_id(), skill="echo", priority=Priority.NORMAL, state=state, input="{}", max_attempts=1,
        timeout_s=60.0, created_at=finished_at - 10, updated_at=finished_at, finished_at=finished_at,
        started_at=None if ran_s is None else finished_at - ran_s,
    )  # fmt: skip


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "claw.db")
    try:
        yield database
    finally:
        await database.close()


async def write(db: Database, records: list[TaskRecord]) -> None:
    # Inserted, then updated in the same transaction: the update sets the timings.
    await TaskWriter(db).write_batch(WriteBatch(new_tasks=records, changed_tasks={r.task_id: r for r in records}))


async def test_rates_and_run_times_cover_only_the_window(db: Database) -> None:
    store = TaskStatistics(db)
    inside = NOW - 60
    records = [finished_task(TaskState.SUCCEEDED, finished_at=inside, ran_s=float(s)) for s in range(1, 101)]
    records += [finished_task(TaskState.DEAD, finished_at=inside) for _ in range(10)]
    records += [finished_task(TaskState.FAILED, finished_at=inside) for _ in range(5)]
    records += [finished_task(TaskState.CANCELLED, finished_at=inside, ran_s=None) for _ in range(5)]
    # Before the window: not counted, however slow.
    records += [finished_task(TaskState.SUCCEEDED, finished_at=NOW - 7200, ran_s=9999.0) for _ in range(50)]
    await write(db, records)

    stats = await store.window_stats(since=NOW - 3600, window_s=3600)
    assert stats.finished == 120
    assert stats.by_state == {"succeeded": 100, "failed": 5, "dead": 10, "cancelled": 5}
    assert stats.completion_rate == pytest.approx(100 / 120)
    assert stats.failure_rate == pytest.approx(15 / 120)
    assert stats.run_mean_s == pytest.approx(50.5)
    assert stats.run_p95_s == pytest.approx(95.0)  # nearest rank: the 95th of 100 sorted run times


async def test_an_empty_window_has_no_rates(db: Database) -> None:
    stats = await TaskStatistics(db).window_stats(since=NOW, window_s=900)
    assert (stats.finished, stats.completion_rate, stats.failure_rate, stats.run_p95_s) == (0, None, None, None)
    assert stats.window_s == 900


async def test_p95_of_a_single_task_is_its_run_time(db: Database) -> None:
    store = TaskStatistics(db)
    await write(db, [finished_task(TaskState.SUCCEEDED, finished_at=NOW, ran_s=2.5)])
    stats = await store.window_stats(since=NOW - 10, window_s=10)
    assert (stats.run_mean_s, stats.run_p95_s) == (2.5, 2.5)


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        (WINDOW_COUNTS_SQL, (NOW, "succeeded", "failed", "dead", "cancelled", "rejected")),
        (WINDOW_RUN_TIMES_SQL, (NOW,)),
        (WINDOW_RANK_SQL, (NOW, 3)),
    ],
)
async def test_window_queries_read_only_the_finished_at_index(db: Database, sql: str, params: tuple[object]) -> None:
    """A range of the covering index, never a scan of the table (which holds inputs and results)."""
    # Many finished tasks, as after months of use: the planner must still pick the window's range.
    await write(db, [finished_task(TaskState.SUCCEEDED, finished_at=NOW - 86400 - i) for i in range(500)])
    plan = " ".join(str(row[3]) for row in await db.fetch_all(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "USING COVERING INDEX tasks_finished (finished_at>?)" in plan, plan
