"""What one transaction committed, in the shape listeners after the commit receive it.

`TaskWriter.write_batch` builds a `Committed` on the event loop just before its transaction and
hands it on only once the transaction has committed. Its parts are copies (task images) or rows that
are never changed once staged (event records), so a listener that runs later, from a queue of its
own, sees the commit as it was, not the tasks as they are by then.

These are built per task on the coordinator's hot path (several per task for every commit), so they
are msgspec Structs without GC tracking: a frozen dataclass costs an `object.__setattr__` per field
(docs/Performance.md, "The cost of the hooks").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import msgspec

from common.states import TaskState
from storage.records import EventRecord, TaskRecord


class TaskImage(msgspec.Struct, frozen=True, gc=False):
    """A task's row as a commit wrote it (the fields listeners use)."""

    task_id: str
    skill: str
    state: TaskState
    attempts: int
    attempt_offset: int
    node_id: str | None
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float
    # Whose task it is (quotas, fair share, usage by tenant).
    tenant: str = "default"

    @classmethod
    def of(cls, record: TaskRecord) -> TaskImage:
        """A copy of the listened-to fields of `record`."""
        return cls(
            record.task_id,
            record.skill,
            record.state,
            record.attempts,
            record.attempt_offset,
            record.node_id,
            record.queued_at,
            record.started_at,
            record.finished_at,
            record.updated_at,
            record.tenant,
        )


class Transition(msgspec.Struct, frozen=True, gc=False):
    """One committed state change: the event-log row that records it, and its task as committed."""

    event: EventRecord
    task: TaskImage


class Committed(msgspec.Struct, frozen=True):
    """One committed transaction."""

    # The rows appended to the event log, in order (redelivered events already in the log left out).
    events: tuple[EventRecord, ...]
    # task id -> image, for every task row the transaction inserted or updated.
    tasks: Mapping[str, TaskImage]
    # The tasks this transaction admitted under an id the coordinator made (a fresh ULID, not one
    # the client chose): nobody can be waiting on them yet, so their admission need not be announced.
    fresh_ids: frozenset[str] = frozenset()

    def transitions(self) -> Iterator[Transition]:
        """The state changes, in the order they were made (a task's admission: `from_state` None)."""
        for event in self.events:
            if event.to_state is not None:
                task = self.tasks.get(event.task_id)
                if task is not None:
                    yield Transition(event, task)

    def changed_states(self) -> list[TaskImage]:
        """The tasks whose state changed, each once, as committed."""
        tasks = self.tasks
        ids = dict.fromkeys(e.task_id for e in self.events if e.to_state is not None and e.task_id in tasks)
        return [tasks[task_id] for task_id in ids]
