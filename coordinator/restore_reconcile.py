"""After a restore from a backup: make the task queue agree with the restored database, once.

A backup holds the database, not the JetStream streams (storage/backup.py). On the first start after
`claw backup restore`, every queued or retrying task whose message is not in the queue - a new
NATS, or a queue that moved on since the backup - is published again (`SubmitPipeline.repost`, a
fresh message id continuing its attempt numbering); a message that is still there (same NATS, the
task's own message id) is left alone, so nothing runs twice. Tasks that were running are handled
by the usual path: their nodes are silent, so they are found lost and run again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.js.errors import NotFoundError

from common.log import get_logger
from common.states import TaskState
from communication.connection import NatsConnection
from communication.subjects import Header
from coordinator.submission import SubmitPipeline
from coordinator.task_book import TaskBook
from storage.records import TaskRecord

log = get_logger("coordinator.restore")


async def reconcile_restored_queue(conn: NatsConnection, book: TaskBook, pipeline: SubmitPipeline, marker: Path) -> int:
    """Publish again the waiting tasks whose message is not in the queue; remove `marker`; how many."""
    reposted = 0
    waiting = book.with_state(TaskState.QUEUED) + book.with_state(TaskState.RETRYING)
    for record in waiting:
        if not await _in_queue(conn, record) and await pipeline.repost(
            record, "restored from a backup: its message was not in the queue"
        ):
            reposted += 1
    await asyncio.to_thread(marker.unlink, missing_ok=True)
    log.warning("restore.reconciled", waiting=len(waiting), reposted=reposted)
    return reposted


async def _in_queue(conn: NatsConnection, record: TaskRecord) -> bool:
    """Whether the queue holds this task's own message at its recorded sequence."""
    if record.stream_seq is None:
        return False
    try:
        msg = await conn.js.get_msg(conn.subjects.tasks_stream, record.stream_seq)
    except NotFoundError:
        return False
    msg_id = str((msg.headers or {}).get(Header.MSG_ID, ""))
    base = record.idempotency_key or record.task_id
    return msg_id == base or msg_id.startswith((f"{base}#", f"{base}~"))
