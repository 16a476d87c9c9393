"""The schedule engine: keeps the schedules, fires them when due, and answers `claw schedules`.

It runs inside the coordinator, so only the holder of the prefix's lease fires (coordinator/lease.py):
a second coordinator is refused until the first one's lease lapses, and then it reads the same
database. Every fire has a deterministic id (`schedule:<name>:<fire time>`, or `:<source>-<id>` for
events) that is the idempotency key of the task it submits, or the run id of the workflow run it
starts; a fire is recorded after its target was accepted. So a crash between the two, a restart at
the fire moment, a retry or the next lease holder computes the same fire again and starts nothing
twice (the database remembers idempotency keys for ever).

A target is a workflow (`coordinator.workflows.start_run`, when the workflows feature is present) or
a plain task (a skill and its input, submitted through the same path as `claw submit`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from common import api, verbs
from common.clock import Clock
from common.errors import InvalidInputError, LeaseLostError, RequestError, ScheduleNotFoundError
from common.event_kinds import EventKind
from common.identity import check_identity, normalise
from common.ids import new_id
from common.log import get_logger
from common.models import TaskSpec
from common.verbs import Role
from coordinator.api_routes import serves
from coordinator.schedules.timing import (
    DEFAULT_GRACE_S,
    CronTiming,
    IntervalTiming,
    MissedPolicy,
    Timing,
    due_fires,
    fire_id,
)
from coordinator.tenants.identity import DEFAULT_TENANT, tenant_of_request
from storage.records import EventRecord, WriteBatch
from storage.schedule_store import FireRow, ScheduleRow, ScheduleStore
from storage.task_writer import TaskWriter

log = get_logger("coordinator.schedules")

UPCOMING = 5
SHOW_FIRES = 20

Submit = Callable[[api.SubmitRequest], Awaitable[api.SubmitReply]]


class Workflows(Protocol):
    """What the workflows feature offers schedules (coordinator/workflows/, the `workflows` branch)."""

    async def start_run(
        self,
        name: str,
        input: Mapping[str, Any] | None,
        *,
        version: int | None = None,
        run_id: str | None = None,
        trigger: str | None = None,
        submitter: str | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> str:
        """Start a run of workflow `name` and return its id; idempotent on `run_id`."""
        ...

    async def flow(self, name: str, version: int | None) -> tuple[object, int]:
        """The registered workflow (its latest version when None); raises when there is none."""
        ...


class Kind:
    """What fires a schedule."""

    CRON = "cron"
    EVERY = "every"
    SUBJECT = "subject"
    ARTIFACT = "artifact"
    EVENT = "event"


@dataclass(slots=True)
class Schedule:
    """A schedule in memory: its row, its definition and its timing (None for event triggers)."""

    row: ScheduleRow
    spec: api.ScheduleCreateRequest
    timing: Timing | None

    @property
    def name(self) -> str:
        return self.row.name

    def view(self) -> api.ScheduleView:
        """The schedule for `claw schedules list`."""
        spec, row = self.spec, self.row
        return api.ScheduleView(
            name=row.name,
            kind=row.kind,
            rule=describe(spec, self.timing),
            target_kind="workflow" if spec.workflow else "task",
            target=spec.workflow or spec.skill or "",
            input=spec.input,
            priority=spec.priority,
            missed=spec.missed,
            max_catchup=spec.max_catchup,
            paused=row.paused,
            next_fire_at=None if row.paused else row.next_fire_at,
            last_fire_at=row.last_fire_at,
            last_fire_id=row.last_fire_id,
            fires=row.fires,
            created_at=row.created_at,
            created_by=row.created_by,
            tenant=spec.tenant or DEFAULT_TENANT,
            trigger_allow=list(spec.trigger_allow),
        )

    def may_be_fired_by(self, identity: str, roles: frozenset[Role]) -> bool:
        """Whether a trigger message published by `identity` (holding `roles`) may fire this schedule:
        its creator, or an identity or role its `trigger_allow` names."""
        name = normalise(identity)
        if self.row.created_by is not None and normalise(self.row.created_by) == name:
            return True
        for allowed in self.spec.trigger_allow:
            if allowed.startswith(ROLE_ALLOW):
                if allowed.removeprefix(ROLE_ALLOW) in {r.value for r in roles}:
                    return True
            elif normalise(allowed) == name:
                return True
        return False


@dataclass(frozen=True, slots=True)
class FireRequest:
    """One fire to make: its id, the time it stands for, why, the event that caused it and, for a
    trigger message, the identity that published it (bound to its credentials)."""

    fire_id: str
    fire_time: float | None
    reason: str
    event: dict[str, Any] | None = None
    by: str | None = None


class ScheduleEngine:
    """Holds the schedules, fires what is due (a periodic job) and serves the schedule verbs."""

    def __init__(
        self,
        store: ScheduleStore,
        clock: Clock,
        *,
        submit: Submit,
        workflows: Callable[[], Workflows | None],
        writer: TaskWriter | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        skills_offered: Callable[[], set[str]] | None = None,
    ) -> None:
        self._store = store
        # Skills some worker offers or that are installed and enabled (None: not checked).
        self._skills_offered = skills_offered
        self._writer = writer
        self._clock = clock
        self._submit = submit
        self._workflows = workflows
        self._grace_s = grace_s
        self._schedules: dict[str, Schedule] | None = None
        # Fires, creates and deletes one at a time: a fire never races the schedule's deletion.
        self._lock = asyncio.Lock()
        self._loading = asyncio.Lock()

    # --- the schedules ----------------------------------------------------------------------------

    async def schedules(self) -> dict[str, Schedule]:
        """Every schedule, loaded from the database on first use."""
        if self._schedules is None:
            # Once: the jobs and the API ask at the same time on start-up, and a second load would
            # replace the schedules the first caller goes on updating (found by the takeover test:
            # fires made again, deduplicated, from a stale next fire time).
            async with self._loading:
                if self._schedules is None:
                    loaded: dict[str, Schedule] = {}
                    for row in await self._store.all():
                        await self._recover(row)
                        spec = msgspec.json.decode(row.definition, type=api.ScheduleCreateRequest)
                        loaded[row.name] = Schedule(row, spec, timing_of(spec, row.anchor_at))
                    self._schedules = loaded
        return self._schedules

    async def _recover(self, row: ScheduleRow) -> None:
        """Record the fires the previous coordinator submitted but died before recording."""
        fires = await self._store.recover_fires(row.name, self._clock.now())
        row.fires += len(fires)
        for fire in fires:
            log.info("schedules.fire_recovered", schedule=row.name, fire_id=fire.fire_id, target=fire.target_id)

    async def _get(self, name: str) -> Schedule:
        schedule = (await self.schedules()).get(name)
        if schedule is None:
            raise ScheduleNotFoundError(f"no schedule called '{name}'; `claw schedules list` shows them")
        return schedule

    # --- firing -----------------------------------------------------------------------------------

    async def fire_due(self) -> None:
        """The periodic job: fire every time schedule whose next fire time has come."""
        failed: Exception | None = None
        async with self._lock:
            for schedule in list((await self.schedules()).values()):
                try:
                    await self._fire_due_one(schedule)
                except LeaseLostError:
                    raise
                except Exception as exc:  # one schedule's trouble must not hold up the others
                    log.exception("schedules.fire_failed", schedule=schedule.name)
                    failed = failed or exc
        if failed is not None:
            raise failed  # counted as the job's failure (`claw status`); tried again at the next tick

    async def _fire_due_one(self, schedule: Schedule) -> None:
        row, timing = schedule.row, schedule.timing
        now = self._clock.now()
        if row.paused or timing is None or row.next_fire_at is None or row.next_fire_at > now:
            return
        due = due_fires(
            timing,
            row.next_fire_at,
            now,
            policy=MissedPolicy(schedule.spec.missed),
            max_catchup=schedule.spec.max_catchup,
            grace_s=self._grace_s,
        )
        if due.skipped:
            log.warning(
                "schedules.missed_fires", schedule=row.name, missed=due.missed, skipped=due.skipped,
                policy=schedule.spec.missed, firing=len(due.fire_times),
            )  # fmt: skip
        fires = []
        for t in due.fire_times:
            reason = "on_time" if t == due.on_time else "catch_up"
            fires.append(await self._start(schedule, FireRequest(fire_id(row.name, t), t, reason)))
        await self._record(schedule, fires, next_fire_at=due.next_fire_at)

    async def fire_event(self, name: str, request: FireRequest) -> api.ScheduleFireView:
        """Fire schedule `name` for an event or by hand, once per fire id."""
        async with self._lock:
            schedule = await self._get(name)
            done = await self._store.fire(request.fire_id)
            if done is not None:
                return _fire_view(done, duplicate=True)
            fire = await self._start(schedule, request)
            await self._record(schedule, [fire], next_fire_at=schedule.row.next_fire_at, by=request.by)
            return _fire_view(fire)

    async def move_cursor(self, name: str, artifact_cursor: int) -> None:
        """Remember the last artifact row an artifact trigger has looked at."""
        async with self._lock:
            schedule = (await self.schedules()).get(name)
            if schedule is None:
                return
            await self._store.set_cursor(name, artifact_cursor, self._clock.now())
            schedule.row.artifact_cursor = max(schedule.row.artifact_cursor, artifact_cursor)

    async def _record(
        self, schedule: Schedule, fires: list[FireRow], *, next_fire_at: float | None, by: str | None = None
    ) -> None:
        now = self._clock.now()
        new = await self._store.record_fires(schedule.name, fires, next_fire_at=next_fire_at, at=now)
        row = schedule.row
        row.next_fire_at, row.fires, row.updated_at = next_fire_at, row.fires + new, now
        if fires:
            row.last_fire_at, row.last_fire_id = fires[-1].fired_at, fires[-1].fire_id
        await self._audit(
            [EventRecord.of(EventKind.SCHEDULE_FIRED, f"schedule:{schedule.name}", fire.fired_at,
                            data={"fire_id": fire.fire_id, "reason": fire.reason, "target": fire.target_id,
                                  "error": fire.error, **({"by": by} if by is not None else {})})
             for fire in fires]
        )  # fmt: skip
        for fire in fires:
            log.info(
                "schedules.fired", schedule=schedule.name, fire_id=fire.fire_id, reason=fire.reason,
                target=fire.target_id, error=fire.error, by=by,
            )  # fmt: skip

    async def _start(self, schedule: Schedule, request: FireRequest) -> FireRow:
        """Start the schedule's target for one fire. A refusal of the target (unknown skill, bad input,
        a full queue) is recorded with the fire; anything else (NATS or the database away) raises, and
        the same fire is tried again."""
        try:
            if schedule.spec.workflow:
                target_id = await self._start_run(schedule, request)
            else:
                target_id = await self._submit_task(schedule, request)
            error = None
        except RequestError as exc:
            target_id, error = None, str(exc)
            log.warning("schedules.target_refused", schedule=schedule.name, fire_id=request.fire_id, error=error)
        return FireRow(
            request.fire_id,
            schedule.name,
            request.fire_time,
            self._clock.now(),
            request.reason,
            target_id,
            error,
            request.by,
        )

    async def _submit_task(self, schedule: Schedule, request: FireRequest) -> str:
        spec = schedule.spec
        assert spec.skill is not None
        task_input = spec.input if request.event is None else msgspec.Raw(msgspec.json.encode(_input_of(spec, request)))
        task = TaskSpec(skill=spec.skill, input=task_input, priority=spec.priority, idempotency_key=request.fire_id)
        reply = await self._submit(
            api.SubmitRequest(tasks=[task], submitter=f"schedule:{schedule.name}", tenant=spec.tenant)
        )
        result = reply.results[0]
        if result.duplicate:  # fired before, not recorded (a crash in between): nothing starts twice
            submitter = await self._store.task_submitter(result.task_id)
            if submitter != f"schedule:{schedule.name}":  # someone else's task holds the fire id
                raise InvalidInputError(
                    f"the fire id is the idempotency key of task {result.task_id}, submitted by {submitter or '?'}, "
                    "not by this schedule: the fire starts nothing"
                )
            log.info("schedules.refired", schedule=schedule.name, fire_id=request.fire_id, task=result.task_id)
        return result.task_id

    async def _start_run(self, schedule: Schedule, request: FireRequest) -> str:
        spec = schedule.spec
        assert spec.workflow is not None
        workflows = self._workflows()
        if workflows is None:
            raise InvalidInputError("this coordinator has no workflows feature: the schedule's workflow cannot start")
        # The run shows what started it (`claw workflow show`); an event's data is in its input.
        trigger = f"schedule {schedule.name}: {request.reason} {request.fire_id}"
        return await workflows.start_run(
            spec.workflow,
            _input_of(spec, request),
            version=spec.workflow_version,
            run_id=request.fire_id,
            trigger=trigger,
            submitter=f"schedule:{schedule.name}",
            tenant=spec.tenant or DEFAULT_TENANT,
        )

    async def _audit(self, events: list[EventRecord]) -> None:
        """Add rows to the event log (hash-chained: `claw audit verify`), after the schedule tables."""
        if events and self._writer is not None:
            await self._writer.write_batch(WriteBatch(events=events))

    async def _audit_change(self, kind: EventKind, name: str, by: str | None, **data: object) -> None:
        await self._audit([EventRecord.of(kind, f"schedule:{name}", self._clock.now(), data={"by": by, **data})])

    # --- the API ----------------------------------------------------------------------------------

    @serves(verbs.SCHEDULE_LIST)
    async def list(self, request: api.ScheduleListRequest) -> api.ScheduleListReply:
        """Every schedule with its next fire time."""
        return api.ScheduleListReply(schedules=[s.view() for s in (await self.schedules()).values()])

    @serves(verbs.SCHEDULE_SHOW)
    async def show(self, request: api.ScheduleNameRequest) -> api.ScheduleShowReply:
        """One schedule, its next fire times and newest fires."""
        schedule = await self._get(request.name)
        upcoming: list[float] = []
        t, timing = schedule.row.next_fire_at, schedule.timing
        while t is not None and timing is not None and not schedule.row.paused and len(upcoming) < UPCOMING:
            upcoming.append(t)
            t = timing.next_after(t)
        fires = [_fire_view(f) for f in await self._store.fires(request.name, limit=SHOW_FIRES)]
        return api.ScheduleShowReply(schedule=schedule.view(), upcoming=upcoming, fires=fires)

    @serves(verbs.SCHEDULE_CREATE)
    async def create(self, request: api.ScheduleCreateRequest) -> api.ScheduleView:
        """Check and add a schedule; its first fire is the first fire time after now."""
        kind = self._check(request)
        workflows = self._workflows()
        if request.workflow is not None and workflows is not None:
            await workflows.flow(request.workflow, request.workflow_version)  # registered? (else its error)
        now = self._clock.now()
        anchor = float(int(now))  # whole seconds: fire ids name seconds
        timing = timing_of(request, anchor)
        row = ScheduleRow(
            name=request.name,
            definition=msgspec.json.encode(request),
            kind=kind,
            paused=request.paused,
            anchor_at=anchor,
            next_fire_at=None if timing is None else timing.next_after(now),
            last_fire_at=None,
            last_fire_id=None,
            artifact_cursor=await self._store.last_artifact_id() if kind == Kind.ARTIFACT else 0,
            fires=0,
            created_at=now,
            created_by=request.by,
            updated_at=now,
        )
        async with self._lock:
            schedules = await self.schedules()
            if request.name in schedules or not await self._store.insert(row):
                raise InvalidInputError(
                    f"a schedule called '{request.name}' exists: delete it first or choose another name"
                )
            schedule = schedules[request.name] = Schedule(row, request, timing)
        rule = describe(request, timing)
        await self._audit_change(EventKind.SCHEDULE_CREATED, request.name, request.by, rule=rule,
                                 target=schedule.view().target)  # fmt: skip
        log.info("schedules.created", schedule=request.name, rule=rule, by=request.by)
        return schedule.view()

    def _check(self, request: api.ScheduleCreateRequest) -> str:
        """The schedule's kind; a clear error for a definition that cannot work."""
        kinds = [kind for kind, given in (
            (Kind.CRON, request.cron is not None), (Kind.EVERY, request.every_s is not None),
            (Kind.SUBJECT, request.on_subject is not None), (Kind.ARTIFACT, request.on_artifact is not None),
            (Kind.EVENT, request.on_event),
        ) if given]  # fmt: skip
        if len(kinds) != 1:
            raise InvalidInputError(
                "give exactly one of --cron, --every, --on-subject, --on-artifact, --on-event"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        if (request.workflow is None) == (request.skill is None):
            raise InvalidInputError("give exactly one target: --workflow NAME or --skill NAME")
        if request.workflow is not None and self._workflows() is None:
            raise InvalidInputError(
                "this coordinator has no workflows feature, so a schedule cannot start workflow "
                f"'{request.workflow}': target a skill (--skill) instead"
            )
        if request.missed not in MissedPolicy.__members__.values():
            raise InvalidInputError(f"bad missed-fire policy '{request.missed}': use skip, once or all")
        try:
            decoded = msgspec.json.decode(request.input)
        except msgspec.DecodeError:
            decoded = None
        if not isinstance(decoded, dict):
            raise InvalidInputError("the schedule's input must be a JSON object")
        if request.on_subject is not None:
            check_subject(request.on_subject)
        if request.skill is not None and not request.allow_unknown_skill and self._skills_offered is not None:
            offered = self._skills_offered()
            if request.skill not in offered:
                raise InvalidInputError(
                    f"no worker offers skill '{request.skill}' and none is installed by that name (offered: "
                    f"{', '.join(sorted(offered)) or 'none'}): check the name, or pass --allow-unknown-skill if a "
                    "worker will bring it later"
                )
        if request.trigger_allow and request.on_subject is None:
            raise InvalidInputError("--allow-trigger is for --on-subject schedules (who may fire it by a message)")
        for allowed in request.trigger_allow:
            _check_allowed(allowed)
        if request.on_artifact is not None and not request.on_artifact:
            raise InvalidInputError("--on-artifact needs a name prefix (for example reports/)")
        tenant_of_request(request.tenant)  # a bad name is refused now, not at every fire
        return kinds[0]

    @serves(verbs.SCHEDULE_DELETE)
    async def delete(self, request: api.ScheduleNameRequest) -> api.ScheduleView:
        """Remove a schedule; its fire history stays."""
        async with self._lock:
            schedule = await self._get(request.name)
            await self._store.delete(request.name)
            del (await self.schedules())[request.name]
        await self._audit_change(EventKind.SCHEDULE_DELETED, request.name, request.by)
        log.info("schedules.deleted", schedule=request.name, by=request.by)
        return schedule.view()

    @serves(verbs.SCHEDULE_PAUSE)
    async def pause(self, request: api.ScheduleNameRequest) -> api.ScheduleView:
        """Stop firing (fire times while paused are not made up later)."""
        return await self._set_paused(request, paused=True)

    @serves(verbs.SCHEDULE_RESUME)
    async def resume(self, request: api.ScheduleNameRequest) -> api.ScheduleView:
        """Fire again, from the first fire time after now."""
        return await self._set_paused(request, paused=False)

    async def _set_paused(self, request: api.ScheduleNameRequest, *, paused: bool) -> api.ScheduleView:
        async with self._lock:
            schedule = await self._get(request.name)
            row, now = schedule.row, self._clock.now()
            if row.paused != paused:
                timing = schedule.timing
                next_fire_at = row.next_fire_at if paused or timing is None else timing.next_after(now)
                await self._store.set_paused(row.name, paused, next_fire_at, now)
                row.paused, row.next_fire_at, row.updated_at = paused, next_fire_at, now
                kind = EventKind.SCHEDULE_PAUSED if paused else EventKind.SCHEDULE_RESUMED
                await self._audit_change(kind, row.name, request.by)
                log.info("schedules.paused" if paused else "schedules.resumed", schedule=row.name, by=request.by)
            return schedule.view()

    @serves(verbs.SCHEDULE_TRIGGER)
    async def trigger(self, request: api.ScheduleTriggerRequest) -> api.ScheduleFireReply:
        """Fire now, by hand (also a paused schedule: the operator asked for it)."""
        key = request.key or new_id()
        fire = await self.fire_event(
            request.name, FireRequest(f"schedule:{request.name}:manual-{key}", None, "manual", None, by=request.by)
        )
        return api.ScheduleFireReply(fire=fire)

    @serves(verbs.SCHEDULE_EVENT)
    async def event(self, request: api.ScheduleEventRequest) -> api.ScheduleFireReply:
        """An outside event (a webhook): fires once per event id; refused while the schedule is paused."""
        schedule = await self._get(request.name)
        if schedule.row.paused:
            raise InvalidInputError(f"schedule '{request.name}' is paused: `claw schedules resume {request.name}`")
        try:
            data = msgspec.json.decode(request.data)
        except RecursionError:
            raise InvalidInputError("the event's data nests arrays and objects too deeply") from None
        event = {"source": "event", "event_id": request.event_id, "data": data}
        fire = await self.fire_event(
            request.name, FireRequest(f"schedule:{request.name}:event-{request.event_id}", None, "event", event)
        )
        return api.ScheduleFireReply(fire=fire)


def timing_of(spec: api.ScheduleCreateRequest, anchor: float) -> Timing | None:
    """The schedule's timing; None for event triggers."""
    if spec.cron is not None:
        return CronTiming(spec.cron, spec.tz)
    if spec.every_s is not None:
        return IntervalTiming(spec.every_s, anchor)
    return None


def describe(spec: api.ScheduleCreateRequest, timing: Timing | None) -> str:
    """The rule for a person."""
    if timing is not None:
        return timing.describe()
    if spec.on_subject is not None:
        return f"on subject {spec.on_subject}"
    if spec.on_artifact is not None:
        return f"on new artifact {spec.on_artifact}*"
    return "on event"


def check_subject(subject: str) -> None:
    """A relative NATS subject: dot-separated tokens, `*` for one token, `>` only last."""
    tokens = subject.split(".")
    bad = (
        not subject
        or any(not t or any(c.isspace() for c in t) for t in tokens)
        or any(
            (">" in t and (t != ">" or i != len(tokens) - 1)) or ("*" in t and t != "*") for i, t in enumerate(tokens)
        )
    )
    if bad:
        raise InvalidInputError(
            f"bad trigger subject '{subject}': dot-separated tokens, '*' for one token, '>' at the end "
            "(it is relative: messages on <prefix>.trigger.<subject> fire the schedule)"
        )


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching of a relative subject."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or (part != "*" and part != have[i]):
            return False
    return len(want) == len(have)


def _input_of(spec: api.ScheduleCreateRequest, request: FireRequest) -> dict[str, Any]:
    """The target's input: the schedule's, plus the event under `trigger` when an event fired it."""
    given: dict[str, Any] = msgspec.json.decode(spec.input)
    return given if request.event is None else given | {"trigger": request.event}


def _fire_view(fire: FireRow, *, duplicate: bool = False) -> api.ScheduleFireView:
    return api.ScheduleFireView(
        fire_id=fire.fire_id,
        schedule=fire.schedule,
        fire_time=fire.fire_time,
        fired_at=fire.fired_at,
        reason=fire.reason,
        target_id=fire.target_id,
        duplicate=duplicate,
        by=fire.fired_by,
        error=fire.error,
    )


# `trigger_allow` entries naming a role rather than an identity.
ROLE_ALLOW = "role:"


def _check_allowed(allowed: str) -> None:
    """One `--allow-trigger` entry: an identity name, or `role:<API role>`."""
    if allowed.startswith(ROLE_ALLOW):
        role = allowed.removeprefix(ROLE_ALLOW)
        if role not in {r.value for r in Role}:
            raise InvalidInputError(
                f"--allow-trigger {allowed}: no such role; use role:{', role:'.join(r.value for r in Role)}"
            )
        return
    try:
        check_identity(allowed)
    except InvalidInputError as exc:
        raise InvalidInputError(f"--allow-trigger {allowed}: {exc} (or role:<role>)") from None
