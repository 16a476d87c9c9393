"""What one transaction committed, in the shape listeners after the commit receive it.

`TaskWriter.write_batch` builds a `Committed` on the event loop just before its transaction and
hands it on only once the transaction has committed. Its parts are copies (task images) or rows that
are never changed once staged (event records), so a listener that runs later, from a queue of its
own, sees the commit as it was, not the tasks as they are by then.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from common.states import TaskState
from storage.records import EventRecord, TaskRecord


@dataclass(frozen=True, slots=True)
class TaskImage:
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


@dataclass(frozen=True, slots=True)
class Transition:
    """One committed state change: the event-log row that records it, and its task as committed."""

    event: EventRecord
    task: TaskImage


@dataclass(frozen=True, slots=True)
class Committed:
    """One committed transaction."""

    # The rows appended to the event log, in order (redelivered events already in the log left out).
    events: tuple[EventRecord, ...]
    # task id -> image, for every task row the transaction inserted or updated.
    tasks: Mapping[str, TaskImage]

    def transitions(self) -> Iterator[Transition]:
        """The state changes, in the order they were made (a task's admission: `from_state` None)."""
        for event in self.events:
            if event.to_state is not None:
                task = self.tasks.get(event.task_id)
                if task is not None:
                    yield Transition(event, task)

    def changed_states(self) -> list[TaskImage]:
        """The tasks whose state changed, each once, as committed."""
        ids = dict.fromkeys(t.event.task_id for t in self.transitions())
        return [self.tasks[task_id] for task_id in ids]
