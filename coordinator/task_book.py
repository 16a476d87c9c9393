"""The coordinator's working set: records of unfinished tasks, and task counts by state.

Holding unfinished tasks in memory keeps database reads off the hot path (an event's task is found
here, not by a SELECT) while memory stays bounded by what is in flight, not by history. Finished tasks
leave the set once their final state is committed; a late event for one is looked up in the database.
Every state change goes through `move`, which keeps the counts exact and returns the event-log row
recording it; what watches state changes (the metrics, the broadcast) listens to the commits of
those rows (`coordinator/commit_listeners.py`), so it never sees a change that was undone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import operator
from collections import Counter
from collections.abc import Mapping

from common.event_kinds import EventKind
from common.states import TERMINAL_STATES, TaskState
from coordinator.state_machine import transition
from storage.records import EventRecord, TaskRecord
from storage.task_queries import TaskQueries

# States in which a task waits for a worker: what the per-skill queue limit counts.
WAITING_STATES = frozenset({TaskState.PENDING, TaskState.QUEUED, TaskState.RETRYING})

_FIELDS = tuple(f.name for f in dataclasses.fields(TaskRecord))
_all_fields = operator.attrgetter(*_FIELDS)


class TaskBook:
    """Unfinished tasks by id, plus counts of all tasks by state."""

    def __init__(self, store: TaskQueries) -> None:
        self._store = store
        self._active: dict[str, TaskRecord] = {}
        self._counts: Counter[TaskState] = Counter()
        self._waiting: Counter[str] = Counter()
        self._waiting_tenant: Counter[str] = Counter()
        # Held while changing records and committing the change: commits then happen in the order
        # the changes were made, so event-log ids follow the order of transitions.
        self.lock = asyncio.Lock()

    async def load(self) -> None:
        """Fill from the database after a (re)start."""
        self._active = {r.task_id: r for r in await self._store.load_unfinished()}
        self._counts = Counter(await self._store.count_by_state())
        self._waiting = Counter(r.skill for r in self._active.values() if r.state in WAITING_STATES)
        self._waiting_tenant = Counter(r.tenant for r in self._active.values() if r.state in WAITING_STATES)

    def __len__(self) -> int:
        return len(self._active)

    def get(self, task_id: str) -> TaskRecord | None:
        """The record of an unfinished (or just finished, not yet released) task."""
        return self._active.get(task_id)

    async def find(self, task_id: str) -> TaskRecord | None:
        """The record from memory, else from the database; None if the task does not exist."""
        record = self._active.get(task_id)
        if record is None:
            record = await self._store.load_record(task_id)
        return record

    def add(self, record: TaskRecord) -> None:
        """A task just admitted (its insert is in the same batch)."""
        self._active[record.task_id] = record
        self._counts[record.state] += 1
        if record.state in WAITING_STATES:
            self._waiting[record.skill] += 1
            self._waiting_tenant[record.tenant] += 1

    def adopt(self, record: TaskRecord) -> None:
        """Take a finished task loaded from the database back into the working set (re-run)."""
        self._active[record.task_id] = record

    def move(
        self,
        record: TaskRecord,
        to_state: TaskState,
        *,
        at: float,
        kind: EventKind,
        attempt: int | None = None,
        node_id: str | None = None,
        event_id: str | None = None,
        data: Mapping[str, object] | None = None,
    ) -> EventRecord:
        """Change a task's state through the transition table; returns the event-log row."""
        from_state = record.state
        row = transition(
            record, to_state, at=at, kind=kind, attempt=attempt, node_id=node_id, event_id=event_id, data=data
        )
        self._counts[from_state] -= 1
        self._counts[to_state] += 1
        change = (to_state in WAITING_STATES) - (from_state in WAITING_STATES)
        self._waiting[record.skill] += change
        self._waiting_tenant[record.tenant] += change
        return row

    @staticmethod
    def snapshot(record: TaskRecord) -> tuple[object, ...]:
        """The record's fields, for `restore` if a change to it has to be undone."""
        values: tuple[object, ...] = _all_fields(record)
        return values

    def restore(self, record: TaskRecord, snapshot: tuple[object, ...]) -> None:
        """Undo changes made since `snapshot`: the record's fields, and the counts of its state."""
        from_state = record.state
        for name, value in zip(_FIELDS, snapshot, strict=True):
            setattr(record, name, value)
        if record.state != from_state:
            self._counts[from_state] -= 1
            self._counts[record.state] += 1
            change = (record.state in WAITING_STATES) - (from_state in WAITING_STATES)
            self._waiting[record.skill] += change
            self._waiting_tenant[record.tenant] += change

    def release_finished(self, records: list[TaskRecord]) -> None:
        """Drop committed finished tasks from the working set."""
        for record in records:
            if record.state in TERMINAL_STATES:
                self._active.pop(record.task_id, None)

    def count(self, state: TaskState) -> int:
        """How many tasks are in `state` (all tasks in the database)."""
        return self._counts[state]

    def waiting(self, skill: str) -> int:
        """Tasks of `skill` waiting for a worker (pending, queued or retrying)."""
        return self._waiting[skill]

    def waiting_of_tenant(self, tenant: str) -> int:
        """Tasks of `tenant` waiting for a worker (pending, queued or retrying), all skills."""
        return self._waiting_tenant[tenant]

    def running_on(self, node_id: str) -> list[TaskRecord]:
        """Tasks whose current attempt runs on `node_id`."""
        return [r for r in self._active.values() if r.state == TaskState.RUNNING and r.node_id == node_id]

    def with_state(self, state: TaskState) -> list[TaskRecord]:
        """Unfinished tasks in `state`, oldest first."""
        return sorted((r for r in self._active.values() if r.state == state), key=lambda r: r.task_id)

    def counts(self) -> dict[str, int]:
        """Tasks by state (all tasks in the database), non-zero only."""
        return {state.value: n for state, n in sorted(self._counts.items()) if n > 0}
