"""An in-process coordinator and workers against a real nats-server: the task path end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from common.config import ClawConfig
from common.errors import CoordinatorUnavailableError, InvalidInputError, TaskNotFoundError, UnknownSkillError
from common.states import AttemptState, NodeStatus, Priority, TaskState
from communication.nats_server import EmbeddedNatsServer
from tests.conftest import make_config
from tests.helpers import (
    BUILTIN_SKILLS,
    connected_client,
    eventually,
    running_coordinator,
    running_worker,
    spec,
    wait_nodes_online,
    worker_config,
)
from worker.context import TaskContext
from worker.skills import Skill, SkillRegistry, builtin_registry


async def test_submitted_task_runs_and_its_result_and_timeline_are_stored(config: ClawConfig) -> None:
    async with (
        running_coordinator(config),
        running_worker(worker_config(config, node_id="w1")),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("echo", {"hello": "world"}))
        assert submitted.state == TaskState.QUEUED
        final = await client.wait([submitted.task_id], timeout_s=20)
        assert final == {submitted.task_id: TaskState.SUCCEEDED}
        task = await client.get_task(submitted.task_id)
    assert bytes(task.result) == b'{"hello":"world"}'
    assert task.node_id == "w1" and task.attempts == 1
    assert task.created_at <= task.queued_at <= task.started_at <= task.finished_at  # type: ignore[operator]
    assert [(a.attempt, a.node_id, a.state) for a in task.attempt_log] == [(1, "w1", AttemptState.SUCCEEDED)]
    assert [(e.kind, e.to_state) for e in task.events if e.to_state] == [
        ("submitted", TaskState.PENDING),
        ("queued", TaskState.QUEUED),
        ("started", TaskState.RUNNING),
        ("succeeded", TaskState.SUCCEEDED),
    ]


async def test_a_short_task_sends_one_event_and_a_long_one_reports_started_while_it_runs(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        js = client.conn.js
        stream = client.conn.subjects.events_stream
        before = (await js.stream_info(stream)).state.messages
        short = await client.submit(spec("echo", {"n": 1}))
        await client.wait([short.task_id], timeout_s=20)
        # Only the outcome reached the event stream; the timeline still shows a regular start.
        assert (await js.stream_info(stream)).state.messages - before == 1
        kinds = [e.kind for e in (await client.get_task(short.task_id)).events]
        assert "started" in kinds and "started (implied)" not in kinds

        long = await client.submit(spec("sleep", {"seconds": 30}))

        async def running() -> bool:
            return (await client.task_states([long.task_id]))[long.task_id] == TaskState.RUNNING

        await eventually(running, timeout_s=20, what="the long task shown running")
        await client.cancel(long.task_id)


async def test_queued_is_recorded_for_a_lone_submit_and_rides_along_with_the_next(config: ClawConfig) -> None:
    async with running_coordinator(config), connected_client(config) as client:
        async with running_worker(config):  # registers the skills, then leaves: nothing runs
            await wait_nodes_online(client, 1)
        first = await client.submit(spec("echo", {"n": 1}))
        second = await client.submit(spec("echo", {"n": 2}))  # right after: `first`'s queued rides along

        async def both_queued_in_the_database() -> bool:
            states = await client.task_states([first.task_id, second.task_id])  # read from SQLite
            return set(states.values()) == {TaskState.QUEUED}

        await eventually(both_queued_in_the_database, timeout_s=10, what="queued written for both")
        for task_id in (first.task_id, second.task_id):
            task = await client.get_task(task_id)
            assert [e.kind for e in task.events] == ["submitted", "queued"]
            assert task.created_at <= task.queued_at  # type: ignore[operator]


async def test_permanent_failure_ends_dead_with_its_error_after_one_attempt(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("fail", {"message": "nope"}))
        assert await client.wait([submitted.task_id], timeout_s=20) == {submitted.task_id: TaskState.DEAD}
        task = await client.get_task(submitted.task_id)
    assert (task.error_type, task.error_message, task.attempts) == ("PermanentError", "nope", 1)
    assert "Traceback" in (task.error_traceback or "")


async def test_a_worker_never_receives_a_skill_it_lacks(config: ClawConfig) -> None:
    async with (
        running_coordinator(config),
        running_worker(worker_config(config, node_id="echoer", skills=["echo"])),
        running_worker(worker_config(config, node_id="sleeper", skills=["sleep"])),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 2)
        echoes = await client.submit_many([spec("echo", {"i": i}) for i in range(20)])
        sleeps = await client.submit_many([spec("sleep", {"seconds": 0}) for _ in range(20)])
        ids = [r.task_id for r in echoes + sleeps]
        final = await client.wait(ids, timeout_s=30)
        assert set(final.values()) == {TaskState.SUCCEEDED}
        nodes = {r.task_id: (await client.get_task(r.task_id, history=False)).node_id for r in echoes + sleeps}
    assert {nodes[r.task_id] for r in echoes} == {"echoer"}
    assert {nodes[r.task_id] for r in sleeps} == {"sleeper"}


async def test_a_worker_at_capacity_pulls_nothing_more(config: ClawConfig) -> None:
    release = asyncio.Event()

    async def block(ctx: TaskContext, input: dict[str, Any]) -> str:
        await release.wait()
        return "done"

    skills = SkillRegistry([Skill("block", block)])
    async with (
        running_coordinator(config),
        running_worker(worker_config(config, concurrency=2), skills=skills) as worker,
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        results = await client.submit_many([spec("block") for _ in range(5)])
        await eventually(lambda: worker.slots.used == 2, what="both slots busy")
        subjects = client.conn.subjects
        consumer = subjects.task_consumer("block", Priority.NORMAL)

        async def stream_holds_three_undelivered() -> bool:
            info = await client.conn.js.consumer_info(subjects.tasks_stream, consumer)
            return info.num_pending == 3 and info.num_ack_pending == 2

        await eventually(stream_holds_three_undelivered, what="3 tasks left undelivered in the stream")
        # Several polls later it still has not taken more than its slots.
        polls = worker.puller.polls
        await eventually(lambda: worker.puller.polls >= polls + 3, what="three more polls")
        info = await client.conn.js.consumer_info(subjects.tasks_stream, consumer)
        assert (info.num_pending, info.num_ack_pending) == (3, 2)
        assert worker.slots.used == 2
        release.set()
        final = await client.wait([r.task_id for r in results], timeout_s=20)
    assert set(final.values()) == {TaskState.SUCCEEDED}


async def test_high_priority_runs_before_normal_before_low(config: ClawConfig) -> None:
    order: list[str] = []

    async def record(ctx: TaskContext, input: dict[str, Any]) -> None:
        order.append(input["name"])

    skills = SkillRegistry([Skill("record", record)])
    async with running_coordinator(config), connected_client(config) as client:
        # A first worker registers the skill and its consumers, then leaves: the queue fills up.
        async with running_worker(worker_config(config, node_id="early"), skills=skills):
            await wait_nodes_online(client, 1)
        specs = [spec("record", {"name": f"low-{i}"}, priority=Priority.LOW) for i in range(3)]
        specs += [spec("record", {"name": f"normal-{i}"}, priority=Priority.NORMAL) for i in range(3)]
        specs += [spec("record", {"name": f"high-{i}"}, priority=Priority.HIGH) for i in range(3)]
        results = await client.submit_many(specs)
        async with running_worker(worker_config(config, node_id="late", concurrency=1), skills=skills):
            await client.wait([r.task_id for r in results], timeout_s=30)
    assert [name.split("-")[0] for name in order] == ["high"] * 3 + ["normal"] * 3 + ["low"] * 3
    assert order == sorted(order, key=lambda n: (["high", "normal", "low"].index(n.split("-")[0]), n))


async def test_sync_handlers_run_in_a_thread(config: ClawConfig) -> None:
    import threading

    main_thread = threading.get_ident()

    def blocking(ctx: TaskContext, input: dict[str, Any]) -> dict[str, bool]:
        ctx.progress(50, "half way")
        return {"other_thread": threading.get_ident() != main_thread}

    skills = SkillRegistry([Skill("blocking", blocking)])
    async with running_coordinator(config), running_worker(config, skills=skills), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("blocking"))
        await client.wait([submitted.task_id], timeout_s=20)

        async def progress_recorded() -> bool:
            task = await client.get_task(submitted.task_id)
            return any(e.kind == "progress" for e in task.events)

        await eventually(progress_recorded, what="progress event")
        task = await client.get_task(submitted.task_id)
    assert bytes(task.result) == b'{"other_thread":true}'


async def test_task_timeout_cancels_the_handler_and_is_retried(config: ClawConfig) -> None:
    from common.models import Backoff

    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        task_spec = spec("sleep", {"seconds": 30}, timeout_s=0.3, max_attempts=2, backoff=Backoff(base_s=0.1))
        submitted = await client.submit(task_spec)
        assert await client.wait([submitted.task_id], timeout_s=30) == {submitted.task_id: TaskState.DEAD}
        task = await client.get_task(submitted.task_id)
    assert task.error_type == "TaskTimeoutError"
    assert "timeout of 0.3 s" in (task.error_message or "")
    assert [(a.attempt, a.error_type) for a in task.attempt_log] == [(1, "TaskTimeoutError"), (2, "TaskTimeoutError")]


async def test_submit_errors_are_clear_and_write_nothing(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        with pytest.raises(
            UnknownSkillError,
            match="unknown skill 'nope'; skills offered by online workers: " + BUILTIN_SKILLS,
        ):
            await client.submit(spec("nope"))
        import msgspec

        from common.models import TaskSpec

        with pytest.raises(InvalidInputError, match="must be a JSON object"):
            await client.submit(TaskSpec(skill="echo", input=msgspec.Raw(b"[1, 2]")))
        # One bad task refuses the whole request: the good ones before it are not written.
        with pytest.raises(InvalidInputError, match="task 3: the input must be a JSON object"):
            await client.submit_many([spec("echo"), spec("echo"), TaskSpec(skill="echo", input=msgspec.Raw(b"7"))])
        with pytest.raises(TaskNotFoundError):
            await client.get_task("01NOSUCHTASK00000000000000")
        assert await client.list_tasks() == []


async def test_unknown_skill_with_no_worker_says_how_to_start_one(config: ClawConfig) -> None:
    async with running_coordinator(config), connected_client(config) as client:
        with pytest.raises(UnknownSkillError, match="no worker is online.*claw worker start"):
            await client.submit(spec("nope"))
        # A registered skill is accepted without a worker: it waits in its queue for one.
        assert (await client.submit(spec("echo"))).state == TaskState.QUEUED


async def test_no_coordinator_is_a_clear_error(config: ClawConfig) -> None:
    async with connected_client(config) as client:
        with pytest.raises(CoordinatorUnavailableError, match="claw coordinator start"):
            await client.ping()


async def test_idempotency_key_returns_the_first_task(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        first = await client.submit(spec("echo", {"n": 1}, idempotency_key="order-42"))
        again = await client.submit(spec("echo", {"n": 2}, idempotency_key="order-42"))
        assert (again.task_id, again.duplicate, first.duplicate) == (first.task_id, True, False)
        assert len(await client.list_tasks()) == 1


async def test_coordinator_restart_folds_events_published_while_it_was_down(config: ClawConfig) -> None:
    async with running_worker(config) as worker, connected_client(config) as client:
        async with running_coordinator(config):
            await wait_nodes_online(client, 1)
            results = await client.submit_many([spec("sleep", {"seconds": 0.5}) for _ in range(6)])
        # Coordinator gone: the worker still finishes its tasks and publishes their events.
        await eventually(lambda: worker.slots.used == 0, timeout_s=20, what="worker idle")
        async with running_coordinator(config):
            final = await client.wait([r.task_id for r in results], timeout_s=20)
    assert set(final.values()) == {TaskState.SUCCEEDED}


async def test_graceful_worker_shutdown_finishes_running_tasks_and_deregisters(config: ClawConfig) -> None:
    async with running_coordinator(config), connected_client(config) as client:
        async with running_worker(worker_config(config, node_id="leaving")):
            await wait_nodes_online(client, 1)
            submitted = await client.submit(spec("sleep", {"seconds": 1}))

            async def running() -> bool:
                return (await client.task_states([submitted.task_id]))[submitted.task_id] == TaskState.RUNNING

            await eventually(running, what="task running")
        # The worker's stop waited for the task: it succeeded, and the node deregistered.
        assert await client.wait([submitted.task_id], timeout_s=5) == {submitted.task_id: TaskState.SUCCEEDED}

        async def offline() -> bool:
            return [n.status for n in await client.nodes()] == [NodeStatus.OFFLINE]

        await eventually(offline, what="node offline after deregistering")


async def test_status_shows_nodes_queues_tasks_and_the_nats_server(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("echo"))
        await client.wait([submitted.task_id], timeout_s=20)
        status = await client.status()
    assert (status.nodes_online, status.nodes_total) == (1, 1)
    assert status.tasks_by_state == {"succeeded": 1}
    assert {(q.skill, q.priority) for q in status.queues} >= {("echo", Priority.HIGH), ("sleep", Priority.LOW)}
    assert status.nats.version.startswith("2.") and status.nats.connections >= 2 and status.nats.error is None


async def test_node_is_offline_after_missed_heartbeats(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = make_config(nats_server, prefix, tmp_path, worker={"heartbeat_interval_s": 0.2})
    async with running_coordinator(config), connected_client(config) as client:
        worker_task = None
        from worker.service import Worker

        worker = await Worker.start(config, skills=builtin_registry())
        stop = asyncio.Event()
        worker_task = asyncio.create_task(worker.run(stop))
        await wait_nodes_online(client, 1)
        # Freeze the worker's heartbeats without a clean deregistration: cancel its run outright.
        worker_task.cancel()
        await asyncio.gather(worker_task, return_exceptions=True)

        async def offline() -> bool:
            return [n.status for n in await client.nodes()] == [NodeStatus.OFFLINE]

        await eventually(offline, timeout_s=10, what="node offline")


async def test_a_result_off_its_output_schema_fails_the_attempt_and_the_timeline_shows_verifying(
    config: ClawConfig,
) -> None:
    import msgspec

    from common.models import Backoff
    from common.skills import Risk, Runtime, SkillManifest

    async def answer(ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        return {"answer": 42 if ctx.attempt == 1 else "forty-two"}  # the first attempt misses the schema

    manifest = SkillManifest(
        name="answer",
        version="1.0.0",
        risk=Risk.READ_ONLY,
        runtime=Runtime(python="tests:answer"),
        output_schema={"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}},
    )
    skills = SkillRegistry([Skill("answer", answer, manifest=manifest)])
    async with running_coordinator(config), running_worker(config, skills=skills), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("answer", max_attempts=2, backoff=Backoff(base_s=0.05)))
        assert await client.wait([submitted.task_id], timeout_s=20) == {submitted.task_id: TaskState.SUCCEEDED}
        task = await client.get_task(submitted.task_id)
    assert msgspec.json.decode(task.result) == {"answer": "forty-two"}
    [first, second] = task.attempt_log
    assert first.error_type == "InvalidOutputError"
    assert "result of answer: field 'answer': 42 is not of type 'string'" in (task.attempt_log[0].error_message or "")
    assert second.state == AttemptState.SUCCEEDED
    per_attempt = [(e.attempt, e.kind) for e in task.events if e.kind in ("started", "verifying", "succeeded")]
    assert per_attempt == [(1, "started"), (1, "verifying"), (2, "started"), (2, "verifying"), (2, "succeeded")]
