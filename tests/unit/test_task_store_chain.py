"""The event log's hash chain stays one chain when a writer is cancelled while its commit runs."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from storage.database import Database
from storage.records import EventRecord, WriteBatch
from storage.task_writer import TaskWriter


@dataclass(slots=True)
class SlowEvent(EventRecord):
    """An event whose row is built only when the test says so (the writer thread waits inside)."""

    inside: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def insert_row(self) -> tuple[object, ...]:
        self.inside.set()
        self.release.wait(30)
        return EventRecord.insert_row(self)


async def test_a_batch_whose_caller_was_cancelled_mid_commit_does_not_fork_the_chain(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "claw.db")
    store = TaskWriter(db)
    slow = SlowEvent(task_id="t1", kind="log", at=2.0)
    try:
        await store.write_batch(WriteBatch(events=[EventRecord(task_id="t1", kind="log", at=1.0)]))
        writer = asyncio.create_task(store.write_batch(WriteBatch(events=[slow])))
        assert await asyncio.to_thread(slow.inside.wait, 30)
        writer.cancel()  # e.g. a request cancelled at shutdown: its transaction still commits
        with pytest.raises(asyncio.CancelledError):
            await writer
        slow.release.set()
        await store.write_batch(WriteBatch(events=[EventRecord(task_id="t1", kind="log", at=3.0)]))
        verified = await store.verify_chain()
        assert (verified.checked, verified.broken, verified.last_id) == (3, None, 3)
    finally:
        slow.release.set()
        await db.close()
