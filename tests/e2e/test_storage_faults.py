"""The state database's faults, as a user meets them: a damaged file, a read-only mount, a full disk.

Each must end in one line that says what is wrong and what to do, a non-zero exit, and no
traceback. Real `claw coordinator` processes; the file systems are real small tmpfs mounts
(tests/filesystems.py).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import pytest

from common.config import NatsSettings
from common.errors import ClawError, CoordinatorUnavailableError, StorageError
from common.ids import new_id
from common.states import TaskState
from communication.api_client import ClawClient
from tests.filesystems import fill, remount, small_filesystem
from tests.helpers import ProcessPool, eventually, spec, wait_until

pytestmark = pytest.mark.e2e


def _make_database(processes: ProcessPool, db: Path) -> None:
    """A real state database with a few tasks in it, made by a coordinator that then stops cleanly."""
    coordinator = processes.spawn("coordinator", "coordinator", "start", "--db", str(db))
    wait_until(lambda: processes.run("status").returncode == 0, timeout_s=30, what="the coordinator answering")
    for i in range(20):
        assert processes.run("submit", "echo", "--input", f'{{"n": {i}, "pad": "{"x" * 2000}"}}').returncode == 0
    coordinator.signal(signal.SIGTERM)
    assert coordinator.popen.wait(30) == 0


def _damage(db: Path) -> None:
    """Overwrite the middle pages of the file with garbage, as a failing disk or a bad copy would."""
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) >= 6 * page, "the database is too small to damage its middle"
    for offset in range(2 * page, len(data) - page, page):
        data[offset + 8 : offset + page] = bytes([0xA5]) * (page - 8)
    db.write_bytes(bytes(data))


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    return lines[-1]


def test_a_damaged_database_stops_the_start_with_the_way_out(processes: ProcessPool, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    _make_database(processes, db)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _damage(db)

    for extra in ([], ["--check-db"]):
        result = processes.run("coordinator", "start", "--db", str(db), *extra, timeout_s=60)
        assert result.returncode != 0
        line = _one_line_error(result.stderr)
        assert "is damaged" in line and "restore it from a backup" in line, line
    # Nothing answered from the damaged file: no coordinator is serving.
    assert processes.run("status").returncode != 0


def test_the_full_check_finds_a_broken_index_that_the_quick_one_does_not(
    processes: ProcessPool, tmp_path: Path
) -> None:
    db = tmp_path / "state.db"
    _make_database(processes, db)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE extra (k INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("CREATE INDEX extra_v ON extra (v)")
        conn.executemany("INSERT INTO extra (v) VALUES (?)", [(f"value {i}",) for i in range(200)])
        conn.commit()
    with sqlite3.connect(db) as conn:
        # Declare the index over another column: its b-tree stays well formed (quick_check is happy),
        # but its entries no longer match the table, which only integrity_check compares.
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX extra_v ON extra (k, v)' WHERE name = 'extra_v'")
        conn.commit()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok"

    quick = processes.spawn("coordinator", "coordinator", "start", "--db", str(db))
    wait_until(lambda: processes.run("status").returncode == 0, timeout_s=30, what="the quick check passing")
    quick.signal(signal.SIGTERM)
    assert quick.popen.wait(30) == 0
    full = processes.run("coordinator", "start", "--db", str(db), "--check-db", timeout_s=60)
    assert full.returncode != 0
    assert "is damaged" in _one_line_error(full.stderr)


def test_a_read_only_database_says_so_in_one_line(processes: ProcessPool, tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "ro") as mount:
        db = mount / "state.db"
        _make_database(processes, db)
        remount(mount, read_only=True)
        result = processes.run("coordinator", "start", "--db", str(db), timeout_s=60)
        assert result.returncode != 0
        line = _one_line_error(result.stderr)
        assert "read-only" in line and str(db) in line, line


def test_sigterm_while_the_disk_is_full_stops_with_one_line(processes: ProcessPool, tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small", size="8m") as mount:
        db = mount / "state.db"
        coordinator = processes.spawn("coordinator", "coordinator", "start", "--db", str(db))
        wait_until(lambda: processes.run("status").returncode == 0, timeout_s=30, what="the coordinator answering")
        fill(mount)
        # Writes now fail: the submit is refused (or times out), and the coordinator keeps running.
        processes.run("submit", "echo", "--input", '{"pad": "' + "x" * 100_000 + '"}', timeout_s=60)
        coordinator.signal(signal.SIGTERM)
        code = coordinator.popen.wait(60)
        output = coordinator.output()
        assert "Traceback" not in output, output[-3000:]
        assert code in (0, 1), code


async def test_a_full_disk_refuses_submits_with_the_reason_and_runs_only_what_was_accepted(
    processes: ProcessPool, tmp_path: Path
) -> None:
    with small_filesystem(tmp_path / "small", size="8m") as mount:
        db = mount / "state.db"
        coordinator = processes.spawn("coordinator", "coordinator", "start", "--db", str(db))
        processes.spawn("worker", "worker", "start", "--node-id", "w1", "--concurrency", "8")
        env = processes.env
        client = await ClawClient.connect(NatsSettings(url=env["CLAW_NATS_URL"], prefix=env["CLAW_NATS_PREFIX"]))
        try:

            async def answering() -> bool:
                try:
                    return any(n.status == "online" for n in await client.nodes())
                except CoordinatorUnavailableError:
                    return False

            await eventually(answering, timeout_s=40, what="the coordinator and a worker")
            # Tasks that finish while the disk is full: the event intake's commits fail and retry.
            before = [(await client.submit(spec("sleep", {"seconds": 1}))).task_id for _ in range(4)]
            filler = fill(mount)
            # The storm comes while the intake retries its commit, holding the task book meanwhile.
            wait_until(lambda: "events.commit_failed" in coordinator.output(), timeout_s=30, what="commits failing")

            async def attempt(i: int) -> tuple[str, str | None]:
                task_id = new_id()
                try:
                    await client.submit(spec("echo", {"n": i, "pad": "x" * 4000}, task_id=task_id))
                    return task_id, None
                except ClawError as exc:
                    return task_id, f"{type(exc).__name__}: {exc}"

            outcomes = await asyncio.gather(*(attempt(i) for i in range(40)))
            refused = {task_id: error for task_id, error in outcomes if error is not None}
            accepted = [task_id for task_id, error in outcomes if error is None]
            assert refused, "nothing was refused: the file system was not full"
            for error in refused.values():
                # The real reason, in time: never a client timeout.
                assert error.startswith("StorageError:") and "disk is full" in error and "not stored" in error, error

            status = processes.run("status")
            assert "FAULT" in status.stdout and "disk is full" in status.stdout, status.stdout

            filler.unlink()  # space returns: the service resumes by itself

            async def resumed() -> bool:
                try:
                    await client.submit(spec("echo", {"after": True}))
                    return True
                except StorageError:
                    return False

            await eventually(resumed, timeout_s=60, what="submits accepted again")
            final = await client.wait([*before, *accepted], timeout_s=60)
            assert set(final.values()) == {TaskState.SUCCEEDED}, final
            # Nothing a client was told failed exists, let alone ran.
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                stored = {row[0] for row in conn.execute("SELECT task_id FROM tasks")}
                runs = dict(conn.execute("SELECT task_id, COUNT(*) FROM task_attempts GROUP BY task_id").fetchall())
            assert not stored & set(refused), sorted(stored & set(refused))
            assert all(runs.get(task_id) == 1 for task_id in [*before, *accepted]), runs
            assert "FAULT" not in processes.run("status").stdout
        finally:
            await client.close()
