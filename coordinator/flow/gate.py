"""The gate in front of publishing: a task whose limit keys have no room is not published.

The submit pipeline hands every task it is about to publish to `admit` (coordinator/submission.py,
`PublishGate`). A task that uses no key passes at once and costs one dict lookup. A task whose keys
all have room takes its permit on each (a place in the concurrency, one start, its token estimate)
and is published. Any other stays `pending` - it holds no worker slot, since no worker can see it -
with a `waiting for limit KEY` row in its timeline, in a waiting list ordered by priority, then
arrival at the gate.

`pump` (a periodic job every `flow.gate_interval_s`, and at once after a permit comes back) walks the
waiting list in that order and publishes what now fits; a task that does not fit blocks later tasks
on the same keys, so priority order holds per key. Lower priorities cannot starve behind a key's
high backlog: per lane (tasks with the same keys) the gate keeps the pull loop's priority shares
(common/priority_shares.py), and a normal or low task owed its share is offered room first.

A task that lists alternatives (llm.chat's `fallback_models`) runs on the first one with room while
its own key cools down or its breaker is open; its timeline says which served (`limit granted`).

A task's permit is given back when its outcome is committed (an after-commit listener), so a worker
that dies holding it costs nothing: the task runs again (reclaimed) under the same permit. While a task
waits to retry it keeps its place; the retry's start is counted when it is due.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import msgspec

from common.clock import Clock
from common.config import FlowSettings
from common.errors import InvalidInputError
from common.event_kinds import EventKind
from common.events import TaskFailed
from common.flow import LLM_SKILL, CooldownNotice, FailureReason, FlowTicket, cooldown_subject, failure_reason
from common.log import get_logger
from common.priority_shares import PriorityShares
from common.states import PRIORITIES, TERMINAL_STATES, Priority, TaskState
from communication.connection import NATS_ERRORS, NatsConnection
from coordinator.flow.keys import KeyResolver, TaskKeys
from coordinator.flow.ledger import Ledger
from coordinator.task_book import TaskBook
from storage.commits import Committed
from storage.records import EventRecord, TaskRecord, WriteBatch
from storage.task_writer import TaskWriter

log = get_logger("coordinator.flow")

PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
ACTIVE_STATES = (TaskState.QUEUED, TaskState.RUNNING, TaskState.RETRYING)
# Skills that report when their call went out (`call_started_at` in their usage): a start is counted
# from then, not from the attempt's start, which a loaded worker may reach long before the call.
EXACT_START_SKILLS = frozenset({LLM_SKILL})


@dataclass(slots=True)
class Grant:
    """A task holding its permits: the keys of the alternative that serves it."""

    keys: list[str]
    tokens: int
    skill: str
    model: str | None


@dataclass(slots=True)
class Waiting:
    """A pending task held by the gate; `arrival` counts the tasks that reached the gate before it."""

    record: TaskRecord
    keys: TaskKeys
    arrival: int
    rank: tuple[int, int] = field(init=False)
    # The tasks waiting for the same room (the first choice's keys): priority shares are kept per lane.
    lane: str = field(init=False)

    def __post_init__(self) -> None:
        # Priority, then the order tasks reached the gate - their submit order, or with fair share
        # the tenants' weighted turns. Not their age: a flood's older tasks, dispatched in turn with
        # another tenant's, would then overtake that tenant's waiting tasks again and again.
        self.rank = (PRIORITY_RANK.get(self.record.priority, 1), self.arrival)
        self.lane = lane_of(self.keys)


@runtime_checkable
class KeyedHolder(Protocol):
    """A submit gate that holds tasks back before they reach this gate (the fair-share dispatcher)."""

    def waiting_on(self, key: str) -> int:
        """How many tasks it holds whose first choice uses `key`."""
        ...


class Publisher(Protocol):
    """What the gate needs from the submit pipeline: publish tasks it let through."""

    async def publish_admitted(self, records: list[TaskRecord]) -> None:
        """Publish pending records and record them queued."""
        ...


class FlowGate:
    """Holds tasks whose keys have no room; publishes them when room appears."""

    def __init__(
        self,
        settings: FlowSettings,
        ledger: Ledger,
        book: TaskBook,
        writer: TaskWriter,
        conn: NatsConnection,
        clock: Clock,
        *,
        manifest_keys: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self._resolver = KeyResolver(settings.skill_keys, manifest_keys, limited=self._limited)
        self._book = book
        self._writer = writer
        self._conn = conn
        self._clock = clock
        self.publisher: Publisher | None = None
        # Gates in front of this one that hold tasks for these keys too (counted in `waiting_on`).
        self.held_before: list[KeyedHolder] = []
        # Loads the stored limits before the first decision (FlowDesk.load).
        self.loader: Callable[[], Awaitable[None]] | None = None
        self.grants: dict[str, Grant] = {}
        self.waiting: dict[str, Waiting] = {}
        self._restored = False
        self._arrivals = itertools.count()
        # Per lane: the starts owed to normal and low while high waits too (docs/Flow_control.md).
        self._shares: dict[str, PriorityShares] = {}
        self._wake = asyncio.Event()
        self._pumping = asyncio.Lock()
        self._notices: list[CooldownNotice] = []

    # --- the pipeline's side -------------------------------------------------------------------

    async def admit(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """The records that may be published now; the others wait (their timeline says for what)."""
        if self.loader is not None:
            await self.loader()
        self._restore()
        now = self._clock.now()
        passed: list[TaskRecord] = []
        held: list[tuple[TaskRecord, str, str]] = []
        notes: list[EventRecord] = []
        refused: list[tuple[TaskRecord, str]] = []
        waiting_keys = self._waiting_keys()
        for record in records:
            if record.task_id in self.grants:
                passed.append(record)  # published before (a republish): it holds its permit
                continue
            if record.task_id in self.waiting:
                continue
            try:
                keys = self._resolver.resolve(record)
            except InvalidInputError as exc:
                refused.append((record, str(exc)))
                continue
            if keys is None:
                passed.append(record)
                continue
            blocked = self._try_grant(record, keys, now, blocked=waiting_keys)
            if blocked is None:
                passed.append(record)
                if record.flow_ticket.alternative:
                    notes.append(_granted(record, now))
            else:
                self.waiting[record.task_id] = Waiting(record, keys, next(self._arrivals))
                waiting_keys.update(keys.keys)
                held.append((record, *blocked))
        if held or notes:
            await self._note(held, notes, now)
        if refused:
            await self._refuse(refused, now)
        return passed

    async def _refuse(self, refused: list[tuple[TaskRecord, str]], now: float) -> None:
        """End `failed` the tasks whose limit keys cannot be made from their input: run anyway, they
        would escape their skill's limits."""
        batch = WriteBatch()
        failed: list[TaskRecord] = []
        async with self._book.lock:
            for record, message in refused:
                if record.state != TaskState.PENDING:
                    continue
                record.finished_at = now
                record.error_type, record.error_message = "InvalidInputError", message
                data = {"error_type": record.error_type, "message": message}
                batch.events.append(self._book.move(record, TaskState.FAILED, at=now, kind=EventKind.FAILED, data=data))
                batch.touch(record)
                failed.append(record)
            if failed:
                await self._writer.write_batch(batch)
                self._book.release_finished(failed)
        for record in failed:
            log.warning("flow.task_refused", task_id=record.task_id, error=record.error_message)

    def _limited(self, key: str) -> bool:
        use = self.ledger.keys.get(key)
        return use is not None and use.limit is not None

    def lane(self, record: TaskRecord) -> str:
        """The keys of the task's first choice ("" for none, or when they cannot be made: `admit`
        refuses it then): the tasks that wait for the same room."""
        try:
            keys = self._resolver.resolve(record)
        except InvalidInputError:
            return ""
        return "" if keys is None else lane_of(keys)

    def _try_grant(
        self, record: TaskRecord, keys: TaskKeys, now: float, *, blocked: set[str]
    ) -> tuple[str, str] | None:
        """Grant the first alternative with room (the task's own unless it is unavailable); else
        (key, why) of what it waits for."""
        first = keys.alternatives[0]
        reason = self._no_room(first.keys, now, keys.tokens, blocked)
        if reason is None:
            self._grant(record, keys, 0, now)
            return None
        if self.ledger.unavailable(first.keys, now) is not None:
            for index, alternative in enumerate(keys.alternatives[1:], start=1):
                if self._no_room(alternative.keys, now, keys.tokens, blocked) is None:
                    self._grant(record, keys, index, now)
                    return None
        return reason

    def _no_room(self, keys: list[str], now: float, tokens: int, blocked: set[str]) -> tuple[str, str] | None:
        for key in keys:
            if key in blocked:
                return key, "behind tasks of higher priority or older"
            if self.ledger.use(key).callers_waiting:
                return key, "behind handlers waiting for a permit"
        return self.ledger.room(keys, now, tokens)

    def _grant(self, record: TaskRecord, keys: TaskKeys, index: int, now: float) -> None:
        alternative = keys.alternatives[index]
        self.ledger.charge(alternative.keys, record.task_id, now, keys.tokens)
        self.grants[record.task_id] = Grant(alternative.keys, keys.tokens, record.skill, alternative.model)
        record.flow_ticket = FlowTicket(keys=alternative.keys, alternative=index, model=alternative.model)

    def _waiting_keys(self) -> set[str]:
        return {key for w in self.waiting.values() for key in w.keys.keys}

    async def _note(self, held: list[tuple[TaskRecord, str, str]], notes: list[EventRecord], now: float) -> None:
        """Write `waiting for limit KEY` into the held tasks' timelines (and which alternative served
        the tasks that run on a fallback)."""
        batch = WriteBatch(events=notes)
        for record, key, why in held:
            batch.events.append(
                EventRecord.of(EventKind.WAITING_LIMIT, record.task_id, now, data={"key": key, "why": why})
            )
        async with self._book.lock:
            await self._writer.write_batch(batch)
        if held:
            log.info("flow.waiting", tasks=len(held), key=held[0][1], why=held[0][2])

    # --- room appears --------------------------------------------------------------------------

    def wake(self) -> None:
        """Room may have appeared (a permit came back, a limit changed): the next pump looks."""
        self._wake.set()

    async def pump(self) -> None:
        """Publish the waiting tasks that fit now, in priority order (a periodic job)."""
        if self.loader is not None:
            await self.loader()  # before `_restore`: a task's keys depend on the limits (tenant keys)
        self._restore()
        await self._send_notices()
        if not self.waiting or self.publisher is None:
            return
        async with self._pumping:
            self._wake.clear()
            now = self._clock.now()
            blocked: set[str] = set()
            granted: list[TaskRecord] = []
            notes: list[EventRecord] = []
            left = Counter((w.lane, w.record.priority) for w in self.waiting.values())
            for waiting in self._in_turn(left):
                record = waiting.record
                left[waiting.lane, record.priority] -= 1
                if record.state != TaskState.PENDING:
                    del self.waiting[record.task_id]  # cancelled, or moved on elsewhere
                    continue
                reason = self._try_grant(record, waiting.keys, now, blocked=blocked)
                if reason is not None:
                    left[waiting.lane, record.priority] += 1
                    blocked.update(waiting.keys.keys)
                    continue
                del self.waiting[record.task_id]
                self._started(waiting.lane, record.priority, left)
                granted.append(record)
                notes.append(_granted(record, now))
            for lane in set(self._shares) - {w.lane for w in self.waiting.values()}:
                del self._shares[lane]  # nothing waits there: it is owed nothing
            if not granted:
                return
            async with self._book.lock:
                await self._writer.write_batch(WriteBatch(events=notes))
            await self.publisher.publish_admitted(granted)

    def _in_turn(self, left: Counter[tuple[str, Priority]]) -> list[Waiting]:
        """The waiting tasks in the order they are offered room: by priority, then arrival, except
        that in a lane where normal or low is owed its share, its first task goes first."""
        ordered = sorted(self.waiting.values(), key=lambda w: w.rank)
        heads: dict[tuple[str, Priority], Waiting] = {}  # the first waiting task of each lane and priority
        for waiting in ordered:
            heads.setdefault((waiting.lane, waiting.record.priority), waiting)
        owed: list[Waiting] = []
        for lane in dict.fromkeys(lane for lane, _ in heads):
            shares = self._shares.setdefault(lane, PriorityShares())
            waiting_now = [p for p in PRIORITIES if (lane, p) in heads]
            turn = shares.choose([p for p in waiting_now if left[lane, p]])
            if turn is not None and turn != waiting_now[0]:
                owed.append(heads[lane, turn])
        if not owed:
            return ordered
        first = {id(w) for w in owed}
        return owed + [w for w in ordered if id(w) not in first]

    def _started(self, lane: str, priority: Priority, left: Counter[tuple[str, Priority]]) -> None:
        """A task of `priority` in `lane` got room: the lower priorities still waiting there were
        passed over once more."""
        shares = self._shares.setdefault(lane, PriorityShares())
        still = [p for p in PRIORITIES if left[lane, p]]
        shares.started(priority, 1, still)
        for idle in set(PRIORITIES) - set(still) - {priority}:
            shares.idle(idle)

    # --- outcomes ------------------------------------------------------------------------------

    def on_commit(self, commit: Committed) -> None:
        """Give permits back at outcomes; count failures (cooldown, breaker) and starts of retries."""
        released = False
        for event in commit.events:
            if event.kind == EventKind.USAGE:
                self._reconcile(event)
                continue
            if event.to_state is None:
                continue
            grant = self.grants.get(event.task_id)
            if event.to_state in TERMINAL_STATES:
                self.waiting.pop(event.task_id, None)
                if grant is not None:
                    self._outcome(grant, event)
                    if event.to_state in (TaskState.FAILED, TaskState.DEAD, TaskState.NEEDS_INPUT):
                        for key in grant.keys:  # as for a retry: a failed call's start taken as its end
                            self.ledger.use(key).started(event.task_id, event.at, exact=True)
                    self.ledger.release(grant.keys, event.task_id)
                    del self.grants[event.task_id]
                    released = True
            elif grant is None:
                continue
            elif event.to_state == TaskState.RUNNING:
                if grant.skill in EXACT_START_SKILLS:
                    continue  # counted until its call's own start is reported (with its usage)
                for key in grant.keys:
                    self.ledger.use(key).started(event.task_id, event.at)
            elif event.to_state == TaskState.RETRYING:
                self._outcome(grant, event)
                for key in grant.keys:
                    # A failed call reports no usage: its start is taken as its end (late, so safe).
                    self.ledger.use(key).started(event.task_id, event.at, exact=True)
                    self.ledger.use(key).expect_start(event.task_id)
            elif event.to_state == TaskState.QUEUED and event.kind == EventKind.LOST:
                for key in grant.keys:
                    self.ledger.use(key).expect_start(event.task_id)
        if released:
            self.wake()

    def _outcome(self, grant: Grant, event: EventRecord) -> None:
        if event.to_state == TaskState.SUCCEEDED:
            for key in grant.keys:
                self.ledger.use(key).succeeded()
            return
        if event.to_state not in (TaskState.FAILED, TaskState.DEAD, TaskState.RETRYING):
            return
        data = _data(event)
        reason = failure_reason(_str(data.get("error_type")), _str(data.get("message")))
        retry_in = data.get("retry_in_s")
        retry_after_s = float(retry_in) if isinstance(retry_in, int | float) else None
        self.failure(grant.keys, reason, event.at, retry_after_s=retry_after_s)

    def failure(self, keys: list[str], reason: FailureReason, at: float, *, retry_after_s: float | None) -> None:
        """A call on `keys` failed for `reason`: cool the keys down, count it for their breakers."""
        for key in keys:
            use = self.ledger.use(key)
            if reason in (FailureReason.RATE_LIMIT, FailureReason.DISCONNECT):
                honoured = reason == FailureReason.RATE_LIMIT and retry_after_s
                wait_s = retry_after_s if honoured and retry_after_s else self.settings.cooldown_s
                wait_s = min(wait_s, self.settings.max_cooldown_s)  # a Retry-After of a year is not honoured
                if use.cool(at + wait_s, reason.value):
                    self._notices.append(CooldownNotice(key=key, until=at + wait_s, reason=reason.value))
                    log.warning("flow.cooldown", key=key, reason=reason.value, seconds=round(wait_s, 3))
            opened = use.failed(
                reason, at, breaker_failures=self.settings.breaker_failures, breaker_open_s=self.settings.breaker_open_s
            )
            if opened:
                log.warning("flow.breaker_open", key=key, failures=use.failures, open_s=self.settings.breaker_open_s)
                self._notices.append(CooldownNotice(key=key, until=use.open_until, reason="breaker open"))

    def escalation(self, record: TaskRecord, failed: TaskFailed) -> str | None:
        """Smart retry's last word on a final failure: a task on an API key that failed for a reason
        retrying cannot fix (invalid input, refused credentials, an unknown model) needs a person."""
        if record.task_id not in self.grants:
            return None
        reason = failure_reason(failed.error_type, failed.message)
        if reason != FailureReason.INVALID_INPUT:
            return None
        return f"{reason.value}: {failed.message}"[:500]

    def _reconcile(self, event: EventRecord) -> None:
        grant = self.grants.get(event.task_id)
        if grant is None:
            return
        data = _data(event)
        call_started_at = data.get("call_started_at")
        if isinstance(call_started_at, int | float):
            for key in grant.keys:
                self.ledger.use(key).started(event.task_id, float(call_started_at), exact=True)
        used = int(data.get("input_tokens", 0) or 0) + int(data.get("output_tokens", 0) or 0)  # type: ignore[call-overload]
        for key in grant.keys:
            self.ledger.use(key).reconcile(event.task_id, used)

    async def _send_notices(self) -> None:
        notices, self._notices = self._notices, []
        subject = cooldown_subject(self._conn.subjects.prefix)
        for notice in notices:
            try:
                await self._conn.nc.publish(subject, msgspec.json.encode(notice))
            except NATS_ERRORS as exc:
                log.warning("flow.notice_failed", key=notice.key, error=str(exc))

    # --- start-up ------------------------------------------------------------------------------

    def _restore(self) -> None:
        """After a restart: tasks already published hold their permits again (no new start)."""
        if self._restored:
            return
        self._restored = True
        for state in ACTIVE_STATES:
            for record in self._book.with_state(state):
                try:
                    keys = self._resolver.resolve(record)
                except InvalidInputError:
                    continue  # published before its skill's templates changed: it runs as it was
                if keys is None:
                    continue
                alternative = keys.alternatives[0]
                for key in alternative.keys:
                    self.ledger.use(key).holders[record.task_id] = keys.tokens
                self.grants[record.task_id] = Grant(alternative.keys, keys.tokens, record.skill, alternative.model)

    def waiting_on(self, key: str) -> int:
        """How many tasks wait with `key` among their first choice's keys (here, or held back for
        their tenant's share in a lane of that key)."""
        here = sum(1 for w in self.waiting.values() if key in w.keys.keys)
        return here + sum(holder.waiting_on(key) for holder in self.held_before)


def lane_of(keys: TaskKeys) -> str:
    """The lane of a task with `keys`: its first choice's keys, sorted and joined."""
    return ",".join(sorted(keys.alternatives[0].keys))


def _granted(record: TaskRecord, now: float) -> EventRecord:
    """`limit granted`: the keys the task holds (and the fallback serving it, if one does)."""
    ticket = record.flow_ticket
    assert isinstance(ticket, FlowTicket)
    data: dict[str, object] = {"key": ", ".join(ticket.keys), "alternative": ticket.alternative or None,
                               "model": ticket.model if ticket.alternative else None}  # fmt: skip
    return EventRecord.of(EventKind.LIMIT_GRANTED, record.task_id, now, data=data)


def _data(event: EventRecord) -> dict[str, object]:
    if not event.data:
        return {}
    value = msgspec.json.decode(event.data)
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
