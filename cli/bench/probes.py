"""The probes of `claw bench`: what the processes cost and what the cluster has done.

- `cpu_seconds`, `busy_cpu_seconds`, `rss_bytes`: the CPU time and memory of a process or the machine;
- `RssSampler` keeps the peak RSS of processes (a thread polling psutil);
- `StateDb` reads the coordinator's SQLite file through a read-only connection, as an outside
  observer would.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import psutil


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds the process (all its threads) has used so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine (all processes, all CPUs) has been busy so far, counting the
    time the hypervisor stole (on Linux `guest` is already inside `user`)."""
    times = psutil.cpu_times()
    busy = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(times, name, 0.0) for name in busy))


def rss_bytes(process: psutil.Process) -> int:
    """The process's resident set size now."""
    return int(process.memory_info().rss)


class RssSampler:
    """Samples the RSS of processes every `interval_s` in a thread and keeps each one's peak."""

    def __init__(self, processes: dict[str, psutil.Process], interval_s: float = 0.05) -> None:
        self._processes = processes
        self._interval_s = interval_s
        self.peaks: dict[str, int] = dict.fromkeys(processes, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            for name, process in self._processes.items():
                with contextlib.suppress(psutil.Error):
                    self.peaks[name] = max(self.peaks[name], rss_bytes(process))
            if self._stop.wait(self._interval_s):
                return


class StateDb:
    """The coordinator's SQLite file through a read-only connection; call from a thread (it blocks)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        return self._conn

    def succeeded(self, since: str = "") -> int:
        """How many tasks with an id from `since` on are `succeeded` (a range of the state index)."""
        row = (
            self._connection()
            .execute("SELECT COUNT(*) FROM tasks WHERE state = 'succeeded' AND task_id >= ?", (since,))
            .fetchone()
        )
        return int(row[0])

    def counts(self) -> dict[str, int]:
        """Tasks by state."""
        rows = self._connection().execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def file_sizes(self) -> tuple[int, int]:
        """Bytes of the database file and of its write-ahead log."""
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size, wal.stat().st_size if wal.exists() else 0

    def close(self) -> None:
        """Close the connection (if one was opened)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
