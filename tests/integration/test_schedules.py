"""Schedules against a real nats-server and SQLite: every fire starts its target once, whatever
happens around the fire moment (a failed record, a restart, a second coordinator); missed fires follow
the policy; subject and artifact triggers fire once per message / artifact.

Time is never asserted on the wall clock: interval schedules of one second are checked for a
contiguous series of fire times with no repeats, and the missed-fire policies run on a coordinator
whose wall clock the test sets (its monotonic clock stays real, so its periodic jobs run as usual).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from common import api, verbs
from common.config import ClawConfig
from common.errors import InvalidInputError, RequestError, ScheduleNotFoundError
from common.states import TaskState
from communication.api_client import ClawClient
from communication.connection import NatsConnection
from coordinator.schedules.engine import ScheduleEngine
from coordinator.service import Coordinator
from storage.schedule_store import ScheduleStore
from tests.helpers import (
    ProcessPool,
    connected_client,
    eventually,
    running_coordinator,
    running_worker,
    spec,
    wait_nodes_online,
    wait_until,
)
from worker.context import TaskContext
from worker.skills import Skill, SkillRegistry, builtin_registry


class SetClock:
    """A wall clock the test sets (`now`), with the host's monotonic clock."""

    def __init__(self, now: float) -> None:
        self.wall = now

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return time.monotonic()


def create(name: str, **fields: Any) -> api.ScheduleCreateRequest:
    if "input" in fields:
        fields["input"] = msgspec.Raw(msgspec.json.encode(fields["input"]))
    return api.ScheduleCreateRequest(name=name, **fields)


def scheduled_tasks(db: Path, name: str) -> list[tuple[str, str, int]]:
    """(idempotency key, state, attempts) of every task the schedule started, by key."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT idempotency_key, state, attempts FROM tasks WHERE idempotency_key LIKE ? ORDER BY idempotency_key",
            (f"schedule:{name}:%",),
        ).fetchall()
    finally:
        conn.close()
    return [(r[0], r[1], r[2]) for r in rows]


def fire_times(keys: list[str], name: str) -> list[float]:
    stamps = [k.removeprefix(f"schedule:{name}:") for k in keys]
    return [datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
            for s in stamps]  # fmt: skip


def assert_contiguous(times: list[float], every_s: float) -> None:
    """Each fire time once, none missing between the first and the last."""
    assert times == sorted(set(times)), "a fire time repeats"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g == every_s for g in gaps), f"fire times not contiguous: gaps {gaps}"


def engine_of(coordinator: Coordinator) -> ScheduleEngine:
    return next(p for p in coordinator.api_providers if isinstance(p, ScheduleEngine))


async def test_an_interval_schedule_submits_one_task_per_fire_time_keyed_by_the_fire_id(config: ClawConfig) -> None:
    db = Path(config.coordinator.db_path)
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        view = await client.call(verbs.SCHEDULE_CREATE, create("tick", every_s=1.0, skill="echo", input={"n": 1}))
        assert view.kind == "every" and view.rule == "every 1s" and view.next_fire_at is not None
        await eventually(lambda: len(scheduled_tasks(db, "tick")) >= 3, what="3 fires")
        listed = (await client.call(verbs.SCHEDULE_LIST, api.ScheduleListRequest())).schedules
        assert [s.name for s in listed] == ["tick"] and listed[0].fires >= 3
        assert listed[0].next_fire_at is not None and listed[0].last_fire_id is not None
        await client.call(verbs.SCHEDULE_PAUSE, api.ScheduleNameRequest(name="tick"))
        tasks = scheduled_tasks(db, "tick")
    assert_contiguous(fire_times([k for k, _, _ in tasks], "tick"), 1.0)


async def test_a_fire_whose_record_failed_is_fired_again_with_the_same_id_and_starts_nothing_twice(
    config: ClawConfig,
) -> None:
    """The coordinator dies between submitting a fire's task and recording the fire (here: the record
    fails once): the next look computes the same fire, whose submit is a duplicate."""
    db = Path(config.coordinator.db_path)
    failures: list[str] = []
    record = ScheduleStore.record_fires

    async def record_failing_once(self: ScheduleStore, name: str, fires: Any, **kw: Any) -> int:
        if fires and not failures:
            failures.append(fires[0].fire_id)
            raise sqlite3.OperationalError("disk I/O error (injected after the submit)")
        return await record(self, name, fires, **kw)

    ScheduleStore.record_fires = record_failing_once  # type: ignore[method-assign]
    try:
        async with running_coordinator(config) as coordinator, connected_client(config) as client:
            await client.call(verbs.SCHEDULE_CREATE, create("retry", every_s=1.0, skill="echo", missed="all"))
            await eventually(lambda: len(scheduled_tasks(db, "retry")) >= 3, what="3 fires")
            await client.call(verbs.SCHEDULE_PAUSE, api.ScheduleNameRequest(name="retry"))
            show = await client.call(verbs.SCHEDULE_SHOW, api.ScheduleNameRequest(name="retry"))
            assert engine_of(coordinator) is not None
    finally:
        ScheduleStore.record_fires = record  # type: ignore[method-assign]
    keys = [k for k, _, _ in scheduled_tasks(db, "retry")]
    assert failures and failures[0] in keys
    # Every fire and change is in the (hash-chained) event log too, each fire once.
    conn = sqlite3.connect(db)
    logged = conn.execute("SELECT kind, data FROM events WHERE task_id = 'schedule:retry' ORDER BY id").fetchall()
    conn.close()
    assert [k for k, _ in logged][:1] == ["schedule.created"] and logged[-1][0] == "schedule.paused"
    fired = [json.loads(d)["fire_id"] for k, d in logged if k == "schedule.fired"]
    assert sorted(fired) == sorted(set(fired)) == sorted(keys)
    assert_contiguous(fire_times(keys, "retry"), 1.0)
    recorded = {f.fire_id for f in show.fires}
    assert failures[0] in recorded and set(keys) == recorded


async def test_missed_fires_follow_each_policy_after_the_coordinator_was_down(config: ClawConfig) -> None:
    clock = SetClock(1_800_000_000.0)
    db = Path(config.coordinator.db_path)
    names = {"skip": "m-skip", "once": "m-once", "all": "m-all"}
    coordinator = await Coordinator.start(config, clock=clock)
    stop = asyncio.Event()
    runner = asyncio.create_task(coordinator.run(stop))
    async with connected_client(config) as client:
        await coordinator.ready.wait()
        for policy, name in names.items():
            await client.call(verbs.SCHEDULE_CREATE, create(name, every_s=60.0, skill="echo", missed=policy,
                                                            max_catchup=3))  # fmt: skip
        anchor = clock.wall
        stop.set()
        await runner
        # Down for 10 fire times; the latest (anchor + 600) is 45 s old: late (the grace of a
        # one-minute schedule is 30 s).
        clock.wall = anchor + 645
        async with running_coordinator_with(config, clock):
            await eventually(lambda: len(scheduled_tasks(db, "m-all")) == 3, what="the capped catch-up")
            await eventually(lambda: len(scheduled_tasks(db, "m-once")) == 1, what="the one catch-up")

            async def all_moved_on() -> bool:
                views = (await client.call(verbs.SCHEDULE_LIST, api.ScheduleListRequest())).schedules
                return all(v.next_fire_at == anchor + 660 for v in views)

            await eventually(all_moved_on, what="every schedule's next fire at anchor + 660")
            assert scheduled_tasks(db, "m-skip") == []
            # The next fire time comes: on time, each policy fires it once.
            clock.wall = anchor + 660.2
            for name in names.values():
                await eventually(
                    lambda name=name: any(k.endswith(stamp(anchor + 660)) for k, _, _ in scheduled_tasks(db, name)),
                    what=f"{name} on time",
                )
    at = {name: fire_times([k for k, _, _ in scheduled_tasks(db, name)], name) for name in names.values()}
    assert at["m-skip"] == [anchor + 660]
    assert at["m-once"] == [anchor + 600, anchor + 660]
    assert at["m-all"] == [anchor + 480, anchor + 540, anchor + 600, anchor + 660]


def stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.asynccontextmanager
async def running_coordinator_with(config: ClawConfig, clock: SetClock) -> AsyncIterator[Coordinator]:
    """`running_coordinator` with a clock of the test's."""
    coordinator = await Coordinator.start(config, clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(coordinator.run(stop))
    try:
        await asyncio.wait_for(coordinator.ready.wait(), 30)
        yield coordinator
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_message_on_a_trigger_subject_fires_once_even_when_published_while_no_coordinator_ran(
    config: ClawConfig,
) -> None:
    db = Path(config.coordinator.db_path)
    async with running_coordinator(config), connected_client(config) as client:
        await client.call(verbs.SCHEDULE_CREATE, create("material", on_subject="material.>", skill="echo",
                                                        input={"kind": "material"}))  # fmt: skip
        view = (await client.call(verbs.SCHEDULE_LIST, api.ScheduleListRequest())).schedules[0]
        assert view.kind == "subject" and view.next_fire_at is None
    # No coordinator now: the stream keeps what is published.
    conn = await NatsConnection.connect(config.nats, name="test-publisher")
    try:
        subjects = conn.subjects
        await conn.js.publish(subjects.trigger(conn.identity, "material.new"), b'{"path": "a.csv"}')
        await conn.js.publish(subjects.trigger(conn.identity, "other.thing"), b"{}")
        await conn.js.publish(subjects.trigger(conn.identity, "material.new.big"), b"not json")
    finally:
        await conn.close()
    async with running_coordinator(config), connected_client(config) as client:
        await eventually(lambda: len(scheduled_tasks(db, "material")) == 2, what="two fires")
        tasks = {k: await task_input(client, k) for k, _, _ in scheduled_tasks(db, "material")}
    inputs = sorted(tasks.values(), key=lambda i: i["trigger"]["seq"])
    assert [i["trigger"]["subject"] for i in inputs] == ["material.new", "material.new.big"]
    assert inputs[0]["trigger"]["data"] == {"path": "a.csv"} and inputs[1]["trigger"]["data"] == "not json"
    assert all(i["kind"] == "material" for i in inputs)
    assert sorted(tasks) == [f"schedule:material:subject-{i['trigger']['seq']}" for i in inputs]


async def task_input(client: ClawClient, key: str) -> dict[str, Any]:
    page = await client.list_tasks(limit=200)
    for summary in page:
        view = await client.get_task(summary.task_id)
        if view.idempotency_key == key:
            return msgspec.json.decode(view.input)  # type: ignore[no-any-return]
    raise AssertionError(f"no task with key {key}")


def artifact_skills() -> SkillRegistry:
    async def write(ctx: TaskContext, input: dict[str, Any]) -> dict[str, str]:
        ref = await ctx.put_artifact(input["name"], input["body"], "text/plain")
        return {"sha256": ref.sha256}

    return SkillRegistry([*builtin_registry().select(["echo"]).all(), Skill("material.write", write)])


async def test_a_new_artifact_under_the_prefix_fires_once_and_others_do_not(config: ClawConfig) -> None:
    db = Path(config.coordinator.db_path)
    async with (
        running_coordinator(config),
        running_worker(config, skills=artifact_skills()) as _,
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        await client.call(verbs.SCHEDULE_CREATE, create("new-material", on_artifact="materials/", skill="echo"))
        for name in ("materials/a.txt", "other/b.txt", "materials/c.txt"):
            result = await client.submit(spec("material.write", {"name": name, "body": name}))
            await client.wait([result.task_id], timeout_s=30)
        await eventually(lambda: len(scheduled_tasks(db, "new-material")) == 2, what="two artifact fires")
        await eventually(
            lambda: all(s == TaskState.SUCCEEDED for _, s, _ in scheduled_tasks(db, "new-material")), what="echoed"
        )
        inputs = [await task_input(client, k) for k, _, _ in scheduled_tasks(db, "new-material")]
    assert sorted(i["trigger"]["name"] for i in inputs) == ["materials/a.txt", "materials/c.txt"]
    assert len(scheduled_tasks(db, "new-material")) == 2


async def test_bad_schedules_are_refused_with_one_clear_line(config: ClawConfig) -> None:
    async with running_coordinator(config), connected_client(config) as client:
        cases = [
            (create("a", skill="echo"), "exactly one of --cron, --every"),
            (create("a", cron="* * * * *", every_s=5.0, skill="echo"), "exactly one of"),
            (create("a", cron="* * * * *"), "exactly one target"),
            (create("a", cron="99 * * * *", skill="echo"), "bad cron expression"),
            (create("a", cron="* * * * *", tz="Nowhere/City", skill="echo"), "unknown time zone"),
            (create("a", every_s=0.1, skill="echo"), "at least 1 s"),
            (create("a", every_s=5.0, skill="echo", missed="sometimes"), "skip, once or all"),
            (create("a", on_subject="a..b", skill="echo"), "bad trigger subject"),
            (
                create("a", cron="* * * * *", workflow="quant"),
                "no workflow 'quant' is registered" if "workflow_register" in verbs.BY_NAME else "no workflows feature",
            ),
            (create("a", every_s=5.0, skill="echo", input=[1, 2]), "JSON object"),
        ]
        for request, message in cases:
            with pytest.raises(RequestError, match=message):  # InvalidInputError, WorkflowNotFoundError
                await client.call(verbs.SCHEDULE_CREATE, request)
        await client.call(verbs.SCHEDULE_CREATE, create("a", every_s=5.0, skill="echo"))
        with pytest.raises(InvalidInputError, match="exists"):
            await client.call(verbs.SCHEDULE_CREATE, create("a", every_s=5.0, skill="echo"))
        assert [s.name for s in (await client.call(verbs.SCHEDULE_LIST, api.ScheduleListRequest())).schedules] == ["a"]


def test_two_coordinators_and_a_sigkill_at_a_fire_moment_give_one_fire_per_fire_time(
    processes: ProcessPool, tmp_path: Path
) -> None:
    """Two coordinators start against one cluster: one holds the lease and fires, the other is refused.
    The holder is SIGKILLed while its one-second schedule fires; the other starts again, takes the
    lease once it lapses, and catches up (`--missed all`): every fire time from the first to the last
    started exactly one task, and each task ran once."""
    env = {"CLAW_COORDINATOR_LEASE_TTL_S": "3", "CLAW_COORDINATOR_LEASE_RENEW_INTERVAL_S": "0.5"}
    db = tmp_path / "claw.db"
    first = processes.spawn("coordinator", "coordinator", "start", env=env)
    wait_until(lambda: processes.run("status", "--json").returncode == 0, timeout_s=30, what="a coordinator answers")
    second = processes.spawn("coordinator", "coordinator", "start", env=env)
    wait_until(lambda: second.returncode is not None, timeout_s=30, what="the second coordinator is refused")
    assert second.returncode != 0 and "lease" in second.output().lower(), second.output()
    processes.spawn("worker", "worker", "start", "--node-id", "w1")
    created = processes.run("schedules", "create", "tick", "--every", "1s", "--skill", "echo", "--missed", "all",
                            "--max-catchup", "1000")  # fmt: skip
    assert created.returncode == 0, created.stderr
    wait_until(lambda: len(scheduled_tasks(db, "tick")) >= 3, timeout_s=30, what="three fires")
    first.kill()  # while it fires every second
    at_kill = len(scheduled_tasks(db, "tick"))
    processes.spawn("coordinator", "coordinator", "start", env=env)
    wait_until(lambda: len(scheduled_tasks(db, "tick")) >= at_kill + 5, timeout_s=60, what="fires after the takeover")
    assert processes.run("schedules", "pause", "tick").returncode == 0
    tasks = scheduled_tasks(db, "tick")
    wait_until(
        lambda: all(state == TaskState.SUCCEEDED for _, state, _ in scheduled_tasks(db, "tick")),
        timeout_s=60,
        what="every fire's task ran",
    )
    keys = [k for k, _, _ in tasks]
    assert_contiguous(fire_times(keys, "tick"), 1.0)
    assert all(attempts == 1 for _, _, attempts in scheduled_tasks(db, "tick"))
    shown = json.loads(processes.run("schedules", "show", "tick", "--json").stdout)
    conn = sqlite3.connect(db)
    recorded = conn.execute("SELECT fire_id, reason, target_id FROM schedule_fires ORDER BY fire_id").fetchall()
    conn.close()
    assert shown["schedule"]["fires"] == len(scheduled_tasks(db, "tick")), (recorded, shown)


class StandInWorkflows:
    """Stands in for the workflows feature (the `workflows` branch) behind the contract schedules rely
    on: `start_run(name, input, *, version, run_id, trigger, submitter) -> run id`, idempotent on
    `run_id`."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}

    async def flow(self, name: str, version: int | None) -> tuple[object, int]:
        return object(), version or 1

    async def start_run(
        self,
        name: str,
        input: Mapping[str, Any] | None,
        *,
        version: int | None = None,
        run_id: str | None = None,
        trigger: str | None = None,
        submitter: str | None = None,
        tenant: str = "default",
    ) -> str:
        assert run_id is not None and isinstance(trigger, str)
        self.runs.setdefault(run_id, {"name": name, "input": input, "version": version, "trigger": trigger,
                                      "submitter": submitter, "tenant": tenant})  # fmt: skip
        return run_id


async def test_a_workflow_target_starts_a_run_whose_id_is_the_fire_id(config: ClawConfig) -> None:
    workflows = StandInWorkflows()

    class Plugin:
        @staticmethod
        def register(coordinator: Coordinator) -> None:
            coordinator.workflows = workflows  # type: ignore[attr-defined]

    async with running_coordinator(config, plugins=[Plugin]), connected_client(config) as client:
        request = create("quant-close", on_event=True, workflow="quant", workflow_version=2, input={"symbol": "SPY"})
        view = await client.create_schedule(request)
        assert (view.target_kind, view.target, view.rule) == ("workflow", "quant", "on event")
        fired = await client.call(verbs.SCHEDULE_TRIGGER, api.ScheduleTriggerRequest(name="quant-close", key="k"))
        again = await client.trigger_schedule("quant-close", key="k")  # the client's friendly method
    run_id = "schedule:quant-close:manual-k"
    assert fired.fire.target_id == run_id and again.duplicate and list(workflows.runs) == [run_id]
    run = workflows.runs[run_id]
    assert run["name"] == "quant" and run["version"] == 2 and run["input"] == {"symbol": "SPY"}
    assert run["submitter"] == "schedule:quant-close" and run["trigger"] == f"schedule quant-close: manual {run_id}"


async def test_weekdays_at_the_exchange_close_fire_at_16_30_new_york_time(config: ClawConfig) -> None:
    """The quant schedule: `30 16 * * 1-5` in America/New_York, on a coordinator whose wall clock the
    test sets to just before the Friday close."""
    ny = ZoneInfo("America/New_York")
    friday_close = datetime.datetime(2026, 3, 6, 16, 30, tzinfo=ny).timestamp()
    clock = SetClock(friday_close - 30)
    db = Path(config.coordinator.db_path)
    async with running_coordinator_with(config, clock), connected_client(config) as client:
        view = await client.call(
            verbs.SCHEDULE_CREATE, create("close", cron="30 16 * * 1-5", tz="America/New_York", skill="echo")
        )
        assert view.next_fire_at == friday_close and view.rule == "cron 30 16 * * 1-5 (America/New_York)"
        clock.wall = friday_close + 0.3
        await eventually(lambda: scheduled_tasks(db, "close"), what="the Friday close fire")
        monday = datetime.datetime(2026, 3, 9, 16, 30, tzinfo=ny).timestamp()  # after the DST change

        async def moved_to_monday() -> bool:
            [schedule] = (await client.call(verbs.SCHEDULE_LIST, api.ScheduleListRequest())).schedules
            return schedule.next_fire_at == monday

        await eventually(moved_to_monday, what="the next fire on Monday")
    assert [k for k, _, _ in scheduled_tasks(db, "close")] == ["schedule:close:2026-03-06T21:30:00Z"]


async def test_a_fire_submitted_but_never_recorded_is_recovered_when_the_policy_will_not_fire_it_again(
    config: ClawConfig,
) -> None:
    """The coordinator submits a fire's task, cannot record the fire, and stops; the next one starts
    when that fire is late, so `skip` will not fire it again: the fire is recorded from its task."""
    clock = SetClock(1_800_000_000.0)
    db = Path(config.coordinator.db_path)
    record = ScheduleStore.record_fires

    async def record_failing(self: ScheduleStore, name: str, fires: Any, **kw: Any) -> int:
        if fires:
            raise sqlite3.OperationalError("disk I/O error (injected after the submit)")
        return await record(self, name, fires, **kw)

    ScheduleStore.record_fires = record_failing  # type: ignore[method-assign]
    try:
        async with running_coordinator_with(config, clock), connected_client(config) as client:
            view = await client.create_schedule(create("lost", every_s=60.0, skill="echo"))
            assert view.next_fire_at is not None
            first = view.next_fire_at
            clock.wall = first + 0.2
            await eventually(lambda: scheduled_tasks(db, "lost"), what="the fire's task")
    finally:
        ScheduleStore.record_fires = record  # type: ignore[method-assign]
    clock.wall = first + 45  # late: skip does not fire it again
    async with running_coordinator_with(config, clock), connected_client(config) as client:

        async def advanced() -> api.ScheduleShowReply | None:
            # The recovery is recorded at load; the next fire time moves on at the engine's next tick.
            # The fires list is read apart from the schedule (a reader connection), so a reply may
            # show the new next fire time a moment before the recovered fire: wait for both.
            reply = await client.call(verbs.SCHEDULE_SHOW, api.ScheduleNameRequest(name="lost"))
            return reply if reply.schedule.next_fire_at == first + 60 and reply.fires else None

        shown = await eventually(advanced, what="the next fire time after the recovered one")
    [(key, _, _)] = scheduled_tasks(db, "lost")
    assert key == stamp_id("lost", first)
    assert [(f.fire_id, f.reason) for f in shown.fires] == [(key, "recovered")] and shown.schedule.fires == 1


def stamp_id(name: str, t: float) -> str:
    return f"schedule:{name}:{stamp(t)}"


@pytest.mark.skipif("workflow_register" not in verbs.BY_NAME, reason="the workflows feature is not on this branch")
async def test_an_interval_schedule_starts_one_real_workflow_run_per_fire_time(config: ClawConfig) -> None:
    """With the workflows feature merged: each fire starts one run of the registered workflow, whose run
    id is the fire id and whose trigger names the schedule; the runs complete."""
    from communication.codec import decode_request

    async def call(client: ClawClient, name: str, body: dict[str, Any]) -> Any:
        verb = verbs.BY_NAME[name]
        return await client.call(verb, decode_request(verb, json.dumps(body).encode()))

    spec_text = json.dumps({"name": "ping", "nodes": {"a": {"skill": "echo", "input": {"k": "=input.k"}}}})
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await call(client, "workflow_register", {"spec": spec_text})
        await client.create_schedule(create("ping-every", every_s=1.0, workflow="ping", input={"k": 7}, missed="all"))
        shown = await eventually(
            lambda: _fires_at_least(client, "ping-every", 2), timeout_s=30, what="two workflow fires"
        )
        await client.call(verbs.SCHEDULE_PAUSE, api.ScheduleNameRequest(name="ping-every"))
        for fire in shown.fires:
            assert fire.error is None and fire.target_id == fire.fire_id

            async def done(run_id: str = fire.fire_id) -> Any:
                view = await call(client, "workflow_show", {"run_id": run_id})
                return view if view.state == "succeeded" else None

            view = await eventually(done, timeout_s=60, what=f"run {fire.fire_id}")
            assert view.trigger == f"schedule ping-every: {fire.reason} {fire.fire_id}"
            assert msgspec.json.decode(view.input)["k"] == 7


async def _fires_at_least(client: ClawClient, name: str, count: int) -> api.ScheduleShowReply | None:
    try:
        shown = await client.call(verbs.SCHEDULE_SHOW, api.ScheduleNameRequest(name=name))
    except ScheduleNotFoundError:  # not made yet
        return None
    return shown if len(shown.fires) >= count else None


class DeclaredTrigger(msgspec.Struct, frozen=True, kw_only=True):
    """A workflow spec's `trigger:` as the workflows feature parses it (its fields, its defaults)."""

    cron: str | None = None
    timezone: str = "UTC"
    interval_s: float | None = None
    subject: str | None = None
    artifact_prefix: str | None = None
    webhook: str | None = None
    missed: str = "skip"
    missed_cap: int = 10
    input: dict[str, Any] = {}


class StandInWithTriggers(StandInWorkflows):
    """The stand-in, also listing the triggers its workflows declare (`triggers()`)."""

    def __init__(self) -> None:
        super().__init__()
        self.declared: list[tuple[str, int, DeclaredTrigger]] = []

    async def triggers(self) -> list[tuple[str, int, DeclaredTrigger]]:
        return list(self.declared)


async def test_triggers_declared_in_workflow_specs_become_schedules_kept_in_step_with_new_versions(
    config: ClawConfig,
) -> None:
    workflows = StandInWithTriggers()

    class Plugin:
        @staticmethod
        def register(coordinator: Coordinator) -> None:
            coordinator.workflows = workflows  # type: ignore[attr-defined]

    async def derived() -> dict[str, api.ScheduleView]:
        return {s.name: s for s in await client.schedules()}

    async with running_coordinator(config, plugins=[Plugin]), connected_client(config) as client:
        await client.create_schedule(create("mine", every_s=3600.0, workflow="quant"))
        close = DeclaredTrigger(cron="30 16 * * 1-5", timezone="America/New_York", missed="once", input={"s": "SPY"})
        workflows.declared = [("quant", 1, close)]
        views = await eventually(lambda: _has(derived, "workflow.quant"), what="the declared schedule")
        quant = views["workflow.quant"]
        assert (quant.rule, quant.target_kind, quant.target) == ("cron 30 16 * * 1-5 (America/New_York)", "workflow",
                                                                 "quant")  # fmt: skip
        assert quant.missed == "once" and msgspec.json.decode(quant.input) == {"s": "SPY"}
        assert quant.created_by == "workflow:quant@1"
        await client.call(verbs.SCHEDULE_PAUSE, api.ScheduleNameRequest(name="workflow.quant"))
        # Version 2 changes the trigger: the schedule follows, still paused.
        workflows.declared = [("quant", 2, DeclaredTrigger(interval_s=60.0))]
        views = await eventually(
            lambda: _has(derived, "workflow.quant", rule="every 1m"), what="the schedule of version 2"
        )
        assert views["workflow.quant"].paused and views["workflow.quant"].created_by == "workflow:quant@2"
        # Version 3 has no trigger: its schedule goes; the one made by hand stays.
        workflows.declared = []
        await eventually(lambda: _lacks(derived, "workflow.quant"), what="the schedule removed")
        assert list(await derived()) == ["mine"]


async def _has(views: Any, name: str, **fields: Any) -> dict[str, api.ScheduleView] | None:
    found: dict[str, api.ScheduleView] = await views()
    view = found.get(name)
    if view is None or any(getattr(view, k) != v for k, v in fields.items()):
        return None
    return found


async def _lacks(views: Any, name: str) -> bool:
    return name not in await views()


@pytest.mark.skipif("workflow_register" not in verbs.BY_NAME, reason="the workflows feature is not on this branch")
async def test_a_workflow_registered_with_an_interval_trigger_runs_on_it_until_a_version_without_one(
    config: ClawConfig,
) -> None:
    from communication.codec import decode_request

    async def call(client: ClawClient, name: str, body: dict[str, Any]) -> Any:
        verb = verbs.BY_NAME[name]
        return await client.call(verb, decode_request(verb, json.dumps(body).encode()))

    nodes = {"a": {"skill": "echo", "input": {"k": "=input.k"}}}
    with_trigger = {"name": "tick", "trigger": {"interval_s": 1, "missed": "all", "input": {"k": 3}}, "nodes": nodes}
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await call(client, "workflow_register", {"spec": json.dumps(with_trigger)})
        shown = await eventually(lambda: _fires_at_least(client, "workflow.tick", 2), timeout_s=30, what="two fires")
        assert shown.schedule.target == "tick" and all(f.target_id == f.fire_id for f in shown.fires)
        await call(client, "workflow_register", {"spec": json.dumps({"name": "tick", "nodes": nodes})})

        async def gone() -> bool:
            return "workflow.tick" not in {s.name for s in await client.schedules()}

        await eventually(gone, timeout_s=30, what="the schedule removed with the trigger")


def test_a_schedule_for_a_skill_nobody_offers_is_refused_in_one_line_unless_allowed(processes: ProcessPool) -> None:
    processes.spawn("coordinator", "coordinator", "start")
    wait_until(lambda: processes.run("status", "--json").returncode == 0, timeout_s=30, what="a coordinator answers")
    refused = processes.run("schedules", "create", "typo", "--every", "1h", "--skill", "ecko")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert "no worker offers skill 'ecko'" in line and "--allow-unknown-skill" in line and "echo" in line
    assert "typo" not in processes.run("schedules", "list").stdout
    later = processes.run(
        "schedules", "create", "later", "--every", "1h", "--skill", "ocr.scan", "--allow-unknown-skill"
    )
    assert later.returncode == 0, later.stderr
    assert processes.run("schedules", "create", "known", "--every", "1h", "--skill", "echo").returncode == 0
