"""The fair-share dispatcher: the coordinator publishes each tenant's tasks in weighted turns.

Off (`tenants.fair_share: false`, the default) every admitted task is published at once, and the
task queue is first come, first served: one tenant's flood of 5,000 tasks runs before another
tenant's task submitted a second later. On, the coordinator keeps only `tenants.dispatch_ahead`
tasks per skill and priority published ahead of their start; the rest stay `pending` in SQLite
(their timeline says `waiting for tenant share`) in one fair queue per skill and priority
(coordinator/tenants/fair_queue.py), and every start frees a place that goes to the tenant whose
turn it is by weight. Per priority, so a high task competes only with other high tasks for its
place, and the workers' priority shares (common/priority_shares.py) still decide between
priorities. With flow control the lanes are per limit keys too (`PublishGate.lane`): a task
the gate holds for a limit keeps its place ahead, and must not keep tasks on other keys behind it. A
tenant at its
`max_running` (dispatched, unfinished tasks) is skipped until one of its tasks ends.

A new task passes straight through when nothing waits in its lane and there is room ahead, so
an uncontended cluster pays one check per task. Counting follows the commits (an after-commit
listener): a task leaves the places ahead once it runs (or ends), and its tenant's running count once
it ends. Tasks published by other paths (approvals, re-runs) are not counted; after a restart the
coordinator counts the tasks queued and running from its working set and queues the pending ones.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from common.config import TenantSettings
from common.errors import ClawError
from common.event_kinds import EventKind
from common.log import get_logger
from common.states import TERMINAL_STATES, Priority, TaskState
from coordinator.submission import SubmitPipeline
from coordinator.task_book import TaskBook
from coordinator.tenants.fair_queue import FairQueue
from storage.commits import Committed
from storage.records import EventRecord, TaskRecord

log = get_logger("coordinator.tenants")

_NOT_STARTED = frozenset({TaskState.PENDING, TaskState.QUEUED})

# A lane is refilled once this fraction of its places ahead is free (one publish round and commit each).
REFILL_FRACTION = 4

# Tasks are queued and counted per (skill, priority) - the task queue's own unit - and, with flow
# control, per the limit keys they wait for: tasks held by a limit then fill only their own keys'
# places, and a task of the same skill on another key is not kept behind them.
Lane = tuple[str, Priority, str]


class FairDispatcher:
    """Holds back tasks of tenants over their share and publishes them in weighted turns."""

    def __init__(self, settings: TenantSettings, book: TaskBook, pipeline: SubmitPipeline) -> None:
        self._settings = settings
        self._book = book
        self._pipeline = pipeline
        self._queues: dict[Lane, FairQueue[TaskRecord]] = {}
        # Dispatched tasks not started yet, per lane; dispatched tasks not finished, per tenant.
        self._ahead: defaultdict[Lane, set[str]] = defaultdict(set)
        self._active: defaultdict[str, set[str]] = defaultdict(set)
        self._tracked: dict[str, tuple[Lane, str]] = {}
        self._loaded = False

    def waiting(self) -> dict[tuple[str, Priority], dict[str, int]]:
        """Held-back tasks per (skill, priority) and tenant."""
        found: defaultdict[tuple[str, Priority], Counter[str]] = defaultdict(Counter)
        for (skill, priority, _), queue in self._queues.items():
            if len(queue):
                found[skill, priority].update(queue.tenants())
        return {lane: dict(tenants) for lane, tenants in found.items()}

    def waiting_on(self, key: str) -> int:
        """Held-back tasks whose lane is for limit key `key` (they wait for it too: `claw limits list`)."""
        return sum(len(queue) for (_, _, keys), queue in self._queues.items() if key in keys.split(","))

    def running(self, tenant: str) -> int:
        """Dispatched, unfinished tasks of `tenant`."""
        return len(self._active.get(tenant, ()))

    # The submit gate (coordinator/submission.py: SubmitGate).

    def hold(self, new: list[TaskRecord]) -> list[EventRecord]:
        """Pass a new task through when nothing waits in its lane and there is room; hold the rest."""
        self._load()
        rows: list[EventRecord] = []
        for record in new:
            lane = self._lane(record)
            queue = self._queues.setdefault(lane, FairQueue())
            room = len(self._ahead[lane]) < self._settings.dispatch_ahead
            if room and not len(queue) and self._may_run(record.tenant):
                self._track(record, lane)
                continue
            self._push(record, lane)
            rows.append(
                EventRecord.of(EventKind.TENANT_WAIT, record.task_id, record.created_at, data={"tenant": record.tenant})
            )
        return rows

    def adopt(self, stuck: list[TaskRecord]) -> list[TaskRecord]:
        """Tasks pending too long: republish those dispatched already; queue the others (from before
        a restart, or approved and re-run tasks whose publish failed) for their turn."""
        self._load()
        republish = []
        for record in stuck:
            if record.task_id in self._tracked:
                republish.append(record)
            elif not record.held_for_share:
                self._push(record, self._lane(record))
        return republish

    def refusal(self, new: list[TaskRecord], added: Counter[str]) -> ClawError | None:
        """The dispatcher refuses nothing (quotas do: coordinator/tenants/quotas.py)."""
        return None

    # Dispatching.

    async def on_commits(self, commits: Sequence[Committed]) -> None:
        """After-commit listener: free the places of tasks that started or ended, then dispatch."""
        for commit in commits:
            for change in commit.transitions():
                tracked = self._tracked.get(change.event.task_id)
                to_state = change.event.to_state
                if tracked is None or to_state is None:
                    continue
                if to_state not in _NOT_STARTED:
                    self._ahead[tracked[0]].discard(change.event.task_id)
                if to_state in TERMINAL_STATES:
                    self._untrack(change.event.task_id)
        await self.dispatch()

    async def dispatch(self, min_room: int | None = None) -> None:
        """Publish the next tasks by weighted turn while there is room ahead (and the tenant may run).

        Only once a lane has `min_room` places free (default: a quarter of `dispatch_ahead`): each
        dispatch costs a publish round and a commit, so refilling in batches keeps the throughput.
        """
        if min_room is None:
            min_room = max(1, self._settings.dispatch_ahead // REFILL_FRACTION)
        ahead = self._settings.dispatch_ahead
        if not any(len(q) and ahead - len(self._ahead[lane]) >= min_room for lane, q in self._queues.items()):
            return
        async with self._book.lock:  # a popped task's batch is committed: it was written under this lock
            chosen = self._take()
        if chosen:
            await self._pipeline.publish_pending(chosen)

    async def tick(self) -> None:
        """Periodic job: forget tasks whose commit failed or which ended unseen, then dispatch."""
        self._load()
        async with self._book.lock:
            for task_id in list(self._tracked):
                record = self._book.get(task_id)
                if record is None or record.state in TERMINAL_STATES:
                    self._untrack(task_id)
                elif record.state not in _NOT_STARTED:
                    self._ahead[self._tracked[task_id][0]].discard(task_id)
            self._forget_idle_lanes()
        await self.dispatch(min_room=1)

    def _forget_idle_lanes(self) -> None:
        """Lanes per limit key come and go with the keys (one per host, per model): keep memory bounded."""
        for lane in [lane for lane, queue in self._queues.items() if not len(queue) and not self._ahead.get(lane)]:
            del self._queues[lane]
        for lane in [lane for lane, ahead in self._ahead.items() if not ahead and lane not in self._queues]:
            del self._ahead[lane]  # re-made empty by a late discard of a task that ran

    def _take(self) -> list[TaskRecord]:
        chosen: list[TaskRecord] = []
        for lane, queue in self._queues.items():
            ahead = self._ahead[lane]
            while len(ahead) < self._settings.dispatch_ahead:
                got = queue.pop(self._may_run)
                if got is None:
                    break
                record = got[1]
                if self._book.get(record.task_id) is not record or record.state != TaskState.PENDING:
                    continue  # cancelled while it waited, or its commit failed
                record.held_for_share = False
                self._track(record, lane)
                chosen.append(record)
        return chosen

    def _lane(self, record: TaskRecord) -> Lane:
        gate = self._pipeline.gate
        return record.skill, record.priority, "" if gate is None else gate.lane(record)

    def _push(self, record: TaskRecord, lane: Lane) -> None:
        record.held_for_share = True
        weight = self._settings.quota(record.tenant).weight
        queue = self._queues.setdefault(lane, FairQueue())
        queue.push(record.tenant, record, weight=weight, priority=record.priority)

    def _may_run(self, tenant: str) -> bool:
        limit = self._settings.quota(tenant).max_running
        return limit is None or len(self._active.get(tenant, ())) < limit

    def _track(self, record: TaskRecord, lane: Lane) -> None:
        self._tracked[record.task_id] = (lane, record.tenant)
        self._active[record.tenant].add(record.task_id)
        if record.state in _NOT_STARTED:
            self._ahead[lane].add(record.task_id)

    def _untrack(self, task_id: str) -> None:
        lane, tenant = self._tracked.pop(task_id)
        self._ahead[lane].discard(task_id)
        active = self._active[tenant]
        active.discard(task_id)
        if not active:
            del self._active[tenant]  # tenant names are many and come and go: keep memory bounded

    def _load(self) -> None:
        """Once, after the working set is loaded: count what runs, queue what is pending."""
        if self._loaded:
            return
        self._loaded = True
        for state in (TaskState.QUEUED, TaskState.RUNNING, TaskState.RETRYING):
            for record in self._book.with_state(state):
                self._track(record, self._lane(record))
        pending = self._book.with_state(TaskState.PENDING)
        for record in pending:
            self._push(record, self._lane(record))
        if pending:
            log.info("tenants.adopted_pending", tasks=len(pending))
