"""Pulling tasks: only as many as there are free slots, high priority before normal before low.

A worker has one durable consumer per (skill, priority) it serves. Asking every consumer on every
loop would cost a round trip each, so each consumer carries a "may have work" flag:

- it is set by a wake-up (`<prefix>.wake.<skill>`, sent by the coordinator after publishing), by the
  periodic poll (every `idle_poll_interval_s`, which finds redeliveries and delayed retries that no
  wake-up announces), and at start;
- it is cleared when a `no_wait` pull returns fewer messages than asked for - unless a wake-up came
  in meanwhile (a generation counter tells), so a wake-up is never lost to a race.

Each round fills the free slots, asking `PriorityShares` (common/priority_shares.py) which priority
fetches next: high while it has work, so a high-priority task waits at most for one free slot, except
the share owed to a lower priority that keeps being passed over (by default normal gets 1 start in 5,
low 1 in 10, while higher work is waiting too), so normal and low never starve. A fetch asks for no
more of a priority than may start before the next share owed falls due.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from common.aio import wait_any
from common.clock import Clock
from common.config import WorkerSettings
from common.log import get_logger
from common.priority_shares import PriorityShares
from common.states import PRIORITIES, Priority
from communication.connection import NATS_ERRORS, NatsConnection
from communication.pull import ConsumerUnavailableError, PullConsumer
from communication.subjects import skill_from_token
from communication.topology import Topology

log = get_logger("worker.puller")

# JetStream redelivers a nak'ed message once its delay passed; look a moment later.
RETRY_WAKE_SLACK_S = 0.05


class Slots:
    """Execution slots: how many tasks may run at once, and how many do."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.freed = asyncio.Event()

    @property
    def free(self) -> int:
        """Slots not in use."""
        return max(self.capacity - self.used, 0)

    def take(self, n: int = 1) -> None:
        """Mark `n` slots used."""
        self.used += n

    def release(self) -> None:
        """Free one slot and wake the puller."""
        self.used -= 1
        self.freed.set()


@dataclass(slots=True)
class _Source:
    skill: str
    priority: Priority
    consumer: PullConsumer
    maybe_work: bool = True
    generation: int = 0
    removed: bool = False


class TaskPuller:
    """Fetches tasks for a set of skills into free slots and hands each to `dispatch`."""

    def __init__(
        self,
        conn: NatsConnection,
        topology: Topology,
        skills: list[str],
        slots: Slots,
        settings: WorkerSettings,
        clock: Clock,
        dispatch: Callable[[Msg], None],
        skill_room: Callable[[str], int | None] | None = None,
    ) -> None:
        self._conn = conn
        self._topology = topology
        self._slots = slots
        self._settings = settings
        self._clock = clock
        self._dispatch = dispatch
        self._skill_room = skill_room
        self._initial = sorted(skills)
        self._sources: dict[Priority, list[_Source]] = {p: [] for p in PRIORITIES}
        self._by_skill: dict[tuple[str, Priority], _Source] = {}
        self._woken = asyncio.Event()
        self._rotation = 0
        self._wake_subs: dict[str, Subscription] = {}
        self.paused = False
        # How many periodic polls have run: observable progress for tests and metrics.
        self.polls = 0
        self._timers: set[asyncio.TimerHandle] = set()
        self.shares = PriorityShares(
            {Priority.NORMAL: settings.normal_share_every, Priority.LOW: settings.low_share_every}
        )
        # Tasks fetched per priority since start: observable shares for tests and metrics.
        self.started: Counter[Priority] = Counter()

    async def start(self) -> None:
        """Create the consumers of the initial skills, open their inboxes, listen for wake-ups."""
        await self.set_skills(self._initial)

    @property
    def skills(self) -> list[str]:
        """The skills pulled now."""
        return sorted({skill for skill, _ in self._by_skill})

    async def set_skills(self, names: list[str]) -> None:
        """Pull exactly these skills from now on (an enabled skill is added, a disabled one dropped)."""
        current = set(self.skills)
        for skill in sorted(current - set(names)):
            await self._remove(skill)
        for skill in sorted(set(names)):
            if skill not in self._wake_subs or any((skill, p) not in self._by_skill for p in PRIORITIES):
                await self._add(skill)  # new, or added only in part by a try that failed
        await self._conn.nc.flush()

    async def _add(self, skill: str) -> None:
        subjects = self._conn.subjects
        for priority in PRIORITIES:
            if (skill, priority) in self._by_skill:
                continue  # added by an earlier try that failed part-way (start-up retries it)
            await self._topology.ensure_task_consumer(skill, priority)
            consumer = PullConsumer(self._conn, subjects.tasks_stream, subjects.task_consumer(skill, priority))
            await consumer.start()
            source = _Source(skill, priority, consumer)
            self._sources[priority].append(source)
            self._by_skill[(skill, priority)] = source
        if skill not in self._wake_subs:
            self._wake_subs[skill] = await self._conn.nc.subscribe(subjects.wake(skill), cb=self._on_wake)
        self._woken.set()
        log.info("pull.skill_added", skill=skill)

    async def _remove(self, skill: str) -> None:
        for priority in PRIORITIES:
            source = self._by_skill.pop((skill, priority), None)
            if source is None:
                continue
            source.removed = True
            self._sources[priority].remove(source)
            await source.consumer.stop()
        sub = self._wake_subs.pop(skill, None)
        if sub is not None:
            await sub.unsubscribe()
        log.info("pull.skill_removed", skill=skill)

    def may_have_work(self, skill: str, priority: Priority) -> bool:
        """Whether the (skill, priority) consumer is flagged: a wake-up or poll said it may have work."""
        source = self._by_skill.get((skill, priority))
        return source is not None and source.maybe_work

    def pause(self) -> None:
        """Fetch nothing more until `resume` (tasks already fetched run on)."""
        self.paused = True

    def resume(self) -> None:
        """Fetch again, looking at every consumer at once."""
        if not self.paused:
            return
        self.paused = False
        for source in self._by_skill.values():
            source.maybe_work = True
            source.generation += 1
        self._slots.freed.set()  # the run loop waits on it while paused
        self._woken.set()

    def wake_later(self, skill: str, priority: Priority, delay_s: float) -> None:
        """Look at a consumer again once a delayed redelivery (a retry) is due."""
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self._flag(skill, priority)

        handle = loop.call_later(max(delay_s, 0.0) + RETRY_WAKE_SLACK_S, fire)
        self._timers.add(handle)

    async def stop(self) -> None:
        """Stop listening; nothing more is fetched."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for sub in self._wake_subs.values():
            await sub.unsubscribe()
        self._wake_subs.clear()
        for source in self._by_skill.values():
            await source.consumer.stop()

    async def run(self, stopping: asyncio.Event) -> None:
        """Fill free slots until `stopping` is set."""
        poll_s = self._settings.idle_poll_interval_s
        next_poll = self._clock.monotonic() + poll_s
        while not stopping.is_set():
            if self._clock.monotonic() >= next_poll:
                self._flag_all()
                next_poll = self._clock.monotonic() + poll_s
            if self.paused or self._slots.free == 0:
                self._slots.freed.clear()
                await wait_any(self._slots.freed, stopping, timeout_s=poll_s)
                continue
            self._woken.clear()
            if await self._round(stopping) == 0:
                await wait_any(self._woken, stopping, timeout_s=max(next_poll - self._clock.monotonic(), 0))

    async def _round(self, stopping: asyncio.Event) -> int:
        """Fill the free slots from the flagged consumers; the priority shares pick which priority
        fetches next (high first, except a share owed to a lower one); returns how many were fetched."""
        fetched = 0
        self._rotation += 1
        exhausted: set[Priority] = set()
        while not (stopping.is_set() or self.paused or self._slots.free == 0):
            waiting = self._waiting(exhausted)
            priority = self.shares.choose(waiting)
            if priority is None:
                break
            got = await self._fetch_priority(priority, self.shares.room(priority, waiting), stopping)
            if got == 0:
                exhausted.add(priority)
                if not any(s.maybe_work for s in self._sources[priority]):
                    self.shares.idle(priority)  # nothing waits there: it is owed nothing
            self.shares.started(priority, got, self._waiting(exhausted))
            self.started[priority] += got
            fetched += got
        return fetched

    def _waiting(self, exhausted: set[Priority]) -> set[Priority]:
        """Priorities with a consumer that may have work (and not found empty in this round)."""
        return {p for p in PRIORITIES if p not in exhausted and self._flagged(p)}

    def _flagged(self, priority: Priority) -> bool:
        return any(s.maybe_work and not s.removed for s in self._sources[priority])

    async def _fetch_priority(self, priority: Priority, limit: int, stopping: asyncio.Event) -> int:
        """Fetch up to `limit` tasks of one priority, its consumers in rotation."""
        fetched = 0
        sources = self._sources[priority]
        start = self._rotation % len(sources) if sources else 0
        for source in sources[start:] + sources[:start]:
            if stopping.is_set() or self.paused or self._slots.free == 0 or fetched >= limit:
                break
            if source.maybe_work and not source.removed:
                fetched += await self._fetch(source, limit - fetched)
        return fetched

    async def _fetch(self, source: _Source, limit: int) -> int:
        want = min(self._slots.free, self._settings.fetch_batch_max, limit)
        room = self._skill_room(source.skill) if self._skill_room is not None else None
        if room is not None:
            if room <= 0:
                return 0  # the skill's own concurrency is used up; its flag stays set
            want = min(want, room)
        generation = source.generation
        try:
            msgs = await source.consumer.fetch_nowait(want)
        except ConsumerUnavailableError as exc:
            log.warning(
                "pull.consumer_unavailable",
                skill=source.skill,
                priority=source.priority.value,
                error=str(exc),
            )
            await self._topology_repair(source)
            return 0
        if len(msgs) < want and source.generation == generation:
            source.maybe_work = False
        self._slots.take(len(msgs))
        for msg in msgs:
            self._dispatch(msg)
        return len(msgs)

    async def _topology_repair(self, source: _Source) -> None:
        """A consumer vanished (deleted, stream re-created): create it again on the next round."""
        self._topology.forget_consumer(source.skill, source.priority)
        try:
            await self._topology.ensure_task_consumer(source.skill, source.priority)
        except NATS_ERRORS as exc:  # logged; the periodic poll retries
            log.warning("pull.consumer_recreate_failed", skill=source.skill, error=str(exc))

    def _flag_all(self) -> None:
        self.polls += 1
        for source in self._by_skill.values():
            source.maybe_work = True
            source.generation += 1

    async def _on_wake(self, msg: Msg) -> None:
        skill = skill_from_token(msg.subject.rsplit(".", 1)[-1])
        try:
            priority = Priority(msg.data.decode())
        except ValueError:
            return
        self._flag(skill, priority)

    def _flag(self, skill: str, priority: Priority) -> None:
        source = self._by_skill.get((skill, priority))
        if source is not None:
            source.maybe_work = True
            source.generation += 1
            self._woken.set()
