"""Retries, dead letters, replay, cancellation, limits and idempotency, on a real nats-server."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.config import ClawConfig
from common.errors import (
    ClawError,
    InvalidInputError,
    PayloadTooLargeError,
    QueueFullError,
    RetryableError,
    TaskNotFoundError,
)
from common.models import Backoff, TaskSpec
from common.states import AttemptState, Priority, TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from tests.conftest import make_config
from tests.helpers import (
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

NO_JITTER = Backoff(base_s=0.5, factor=2.0, max_s=10.0, jitter=0.0)


class Switch:
    """A skill whose behaviour the test flips: fail (retryably) or succeed; records its calls."""

    def __init__(self) -> None:
        self.failing = True
        self.calls: list[tuple[int, float]] = []
        self.release = asyncio.Event()

    async def flaky(self, ctx: TaskContext, input: dict[str, Any]) -> dict[str, int]:
        self.calls.append((ctx.attempt, time.monotonic()))
        if self.failing:
            raise RetryableError(f"attempt {ctx.attempt} failed on purpose")
        return {"attempt": ctx.attempt}

    async def block(self, ctx: TaskContext, input: dict[str, Any]) -> str:
        self.calls.append((ctx.attempt, time.monotonic()))
        await self.release.wait()
        return "released"

    def registry(self) -> SkillRegistry:
        registry = builtin_registry()
        registry.register(Skill("flaky", self.flaky))
        registry.register(Skill("block", self.block))
        return registry


def retry_delays(task: Any) -> list[float]:
    return [msgspec.json.decode(bytes(e.data))["retry_in_s"] for e in task.events if e.kind == "retrying"]


async def test_retries_with_growing_delays_then_dead_letter_then_replay_succeeds(config: ClawConfig) -> None:
    switch = Switch()
    async with (
        running_coordinator(config),
        running_worker(config, skills=switch.registry()),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("flaky", {"order": 7}, max_attempts=3, backoff=NO_JITTER))
        assert await client.wait([submitted.task_id], timeout_s=30) == {submitted.task_id: TaskState.DEAD}
        task = await client.get_task(submitted.task_id)

        # Three attempts, spaced by the backoff: 0.5 s then 1.0 s, as JetStream redelivered them.
        assert [a.state for a in task.attempt_log] == [AttemptState.FAILED] * 3
        assert retry_delays(task) == [0.5, 1.0]
        gaps = [b[1] - a[1] for a, b in zip(switch.calls, switch.calls[1:], strict=False)]
        assert gaps[0] >= 0.45 and gaps[1] >= 0.95 and gaps[1] > gaps[0]
        assert ("retrying", TaskState.RETRYING) in [(e.kind, e.to_state) for e in task.events]

        # The dead letter carries the input and every attempt's error with its traceback.
        [letter] = await eventually(lambda: client.dlq_list(), what="dead letter")
        assert letter.letter.kind == "task" and letter.letter.task_id == submitted.task_id
        assert letter.letter.task is not None and bytes(letter.letter.task.input) == b'{"order":7}'
        assert [(a.attempt, a.error_type) for a in letter.letter.attempts] == [(n, "RetryableError") for n in (1, 2, 3)]
        assert all("Traceback" in (a.traceback or "") for a in letter.letter.attempts)

        # Replay: a fresh series of attempts, numbered on from the first; replaying twice does nothing more.
        switch.failing = False
        [replayed] = await client.dlq_replay(submitted.task_id)
        assert replayed.changed
        [again] = await client.dlq_replay(submitted.task_id)
        assert not again.changed and "already replayed" in again.note
        assert await client.wait([submitted.task_id], timeout_s=20) == {submitted.task_id: TaskState.SUCCEEDED}
        task = await client.get_task(submitted.task_id)
    assert bytes(task.result) == b'{"attempt":4}'
    assert [e.kind for e in task.events].count("replayed") == 1
    assert len(switch.calls) == 4


async def test_a_retry_after_hint_is_honoured_exactly(config: ClawConfig) -> None:
    async def rate_limited(ctx: TaskContext, input: dict[str, Any]) -> str:
        if ctx.attempt == 1:
            raise RetryableError("429 too many requests", retry_after_s=1.25)
        return "ok"

    skills = SkillRegistry([Skill("limited", rate_limited)])
    async with (
        running_coordinator(config),
        running_worker(config, skills=skills),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("limited", backoff=NO_JITTER))
        await client.wait([submitted.task_id], timeout_s=20)
        task = await client.get_task(submitted.task_id)
    assert task.state == TaskState.SUCCEEDED
    assert retry_delays(task) == [1.25]
    first, second = task.attempt_log
    assert second.started_at - first.finished_at >= 1.2  # type: ignore[operator]


async def test_poison_message_is_dead_lettered_and_the_worker_keeps_serving(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        subjects = client.conn.subjects
        await client.conn.js.publish(subjects.task(Priority.NORMAL, "echo"), b"\x00\xffnot a task")
        [letter] = await eventually(lambda: client.dlq_list(), what="poison dead letter")
        assert (letter.letter.kind, letter.letter.skill) == ("poison", "echo")
        import base64

        assert base64.b64decode(letter.letter.raw_base64 or "") == b"\x00\xffnot a task"
        submitted = await client.submit(spec("echo", {"still": "serving"}))
        assert await client.wait([submitted.task_id], timeout_s=20) == {submitted.task_id: TaskState.SUCCEEDED}
        with pytest.raises(TaskNotFoundError):
            await client.dlq_replay("01NOSUCHTASK00000000000000")


async def cancel_one_queued_behind_a_blocker(client: ClawClient, switch: Switch, reason: str) -> str:
    """On a one-slot worker: run a blocker, cancel the task queued behind it, let the blocker end."""
    await wait_nodes_online(client, 1)
    blocker = await client.submit(spec("block"))
    await eventually(lambda: len(switch.calls) == 1, what="blocker running")
    waiting = await client.submit(spec("block"))
    reply = await client.cancel(waiting.task_id, reason=reason)
    assert reply.state == TaskState.CANCELLED
    switch.release.set()
    await client.wait([blocker.task_id], timeout_s=20)
    return waiting.task_id


async def test_cancelled_queued_task_never_runs(config: ClawConfig) -> None:
    switch = Switch()
    async with (
        running_coordinator(config),
        running_worker(worker_config(config, concurrency=1), skills=switch.registry()),
        connected_client(config) as client,
    ):
        waiting_id = await cancel_one_queued_behind_a_blocker(client, switch, "changed my mind")
        # The worker is free again and polls its queue: the cancelled task is gone from it.
        info = await client.conn.js.consumer_info(
            client.conn.subjects.tasks_stream, client.conn.subjects.task_consumer("block", Priority.NORMAL)
        )
        assert info.num_pending == 0
        task = await client.get_task(waiting_id)
    assert len(switch.calls) == 1
    assert task.state == TaskState.CANCELLED and task.attempts == 0
    assert [e.kind for e in task.events if e.to_state] == ["submitted", "queued", "cancelled"]


async def test_cancelling_a_running_task_stops_it_on_its_worker_and_it_is_not_retried(config: ClawConfig) -> None:
    switch = Switch()
    async with (
        running_coordinator(config),
        running_worker(config, skills=switch.registry()),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("block", max_attempts=3))
        await eventually(lambda: len(switch.calls) == 1, what="task running")
        cancelled_at = time.monotonic()
        await client.cancel(submitted.task_id)

        async def attempt_cancelled() -> bool:
            task = await client.get_task(submitted.task_id)
            return any(a.state == AttemptState.CANCELLED for a in task.attempt_log)

        await eventually(attempt_cancelled, timeout_s=10, interval_s=0.02, what="attempt cancelled on the worker")
        stopped_after = time.monotonic() - cancelled_at
        print(f"\nrunning task cancelled on its worker after {stopped_after * 1000:.0f} ms")
        assert stopped_after < 2.0
        task = await client.get_task(submitted.task_id)
        assert (task.state, task.attempts, len(switch.calls)) == (TaskState.CANCELLED, 1, 1)

        # `claw task retry` runs it again as a new series.
        switch.release.set()
        reply = await client.retry(submitted.task_id)
        assert reply.changed
        assert await client.wait([submitted.task_id], timeout_s=20) == {submitted.task_id: TaskState.SUCCEEDED}
        assert (await client.get_task(submitted.task_id)).attempts == 2


async def test_cancel_and_retry_errors_are_clear(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        with pytest.raises(TaskNotFoundError, match="no task with id 01NOSUCHTASK00000000000000"):
            await client.cancel("01NOSUCHTASK00000000000000")
        done = await client.submit(spec("echo"))
        await client.wait([done.task_id], timeout_s=20)
        with pytest.raises(InvalidInputError, match="already succeeded; there is nothing to cancel"):
            await client.cancel(done.task_id)
        with pytest.raises(InvalidInputError, match="only failed, dead or cancelled tasks can be re-run"):
            await client.retry(done.task_id)
        assert [t.state for t in await client.list_tasks()] == [TaskState.SUCCEEDED]


async def test_queue_full_refuses_the_whole_request_and_writes_nothing(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = make_config(nats_server, prefix, tmp_path, coordinator={"max_queued_per_skill": 5})
    async with running_coordinator(config), connected_client(config) as client:
        async with running_worker(config):  # registers the skills, then leaves: nothing runs
            await wait_nodes_online(client, 1)
        await client.submit_many([spec("echo", {"n": i}) for i in range(4)])
        with pytest.raises(QueueFullError, match="skill 'echo' has 4 tasks waiting and the limit is 5"):
            await client.submit_many([spec("echo"), spec("echo")])
        await client.submit(spec("echo"))
        with pytest.raises(QueueFullError, match="queue full"):
            await client.submit(spec("echo"))
        await client.submit(spec("sleep"))  # other skills have their own limit
        assert len(await client.list_tasks()) == 6


async def test_queue_wait_holds_a_submit_until_workers_make_room(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = make_config(nats_server, prefix, tmp_path, coordinator={"max_queued_per_skill": 5})
    async with running_coordinator(config), connected_client(config) as client:
        async with running_worker(config):  # registers the skills, then leaves: nothing runs
            await wait_nodes_online(client, 1)
        first = await client.submit_many([spec("echo", {"n": i}) for i in range(5)])
        more = [spec("echo", {"n": i}) for i in range(5, 8)]
        submitting = asyncio.create_task(client.submit_many(more, queue_wait_s=60))
        try:
            # No worker is online, so no room can appear: the submit must still be waiting.
            done, _ = await asyncio.wait({submitting}, timeout=1.0)
            assert not done
            async with running_worker(config):
                second = await submitting
                ids = [r.task_id for r in first + second]
                final = await client.wait(ids, timeout_s=30)
        finally:
            submitting.cancel()
    assert len(final) == 8 and set(final.values()) == {TaskState.SUCCEEDED}


async def test_a_batch_refused_part_way_says_how_many_tasks_got_in(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    from communication.api_client import MAX_TASKS_PER_REQUEST

    limit = MAX_TASKS_PER_REQUEST + MAX_TASKS_PER_REQUEST // 2
    config = make_config(nats_server, prefix, tmp_path, coordinator={"max_queued_per_skill": limit})
    total = 3 * MAX_TASKS_PER_REQUEST
    async with running_coordinator(config), connected_client(config) as client:
        async with running_worker(config):
            await wait_nodes_online(client, 1)
        with pytest.raises(QueueFullError) as refused:
            await client.submit_many([spec("echo", {"n": i}) for i in range(total)])
        match = re.match(
            rf"(\d+) of {total} tasks were submitted and will run; the other (\d+) were not: queue full",
            str(refused.value),
        )
        assert match, str(refused.value)
        stored = await client.list_tasks(limit=total)
    assert len(stored) == int(match.group(1)) == total - int(match.group(2))
    assert MAX_TASKS_PER_REQUEST <= len(stored) <= limit


async def test_oversize_input_is_refused_with_the_sizes(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = make_config(nats_server, prefix, tmp_path, coordinator={"max_input_bytes": 1000})
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        with pytest.raises(PayloadTooLargeError, match=r"the input is 1\.\d KiB, over the inline limit of 1000 B"):
            await client.submit(spec("echo", {"blob": "x" * 1200}))
        # Beyond NATS's own message limit the client refuses before sending anything.
        huge = TaskSpec(skill="echo", input=msgspec.Raw(msgspec.json.encode({"blob": "x" * 2_000_000})))
        with pytest.raises(PayloadTooLargeError, match="over NATS's message limit"):
            await client.submit(huge)
        assert await client.list_tasks() == []


async def test_progress_acks_keep_a_long_task_from_being_redelivered(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    # An ack wait of 1.5 s stands in for the default 30 s; the task runs for five of them.
    config = make_config(nats_server, prefix, tmp_path, jetstream={"ack_wait_s": 1.5})

    def node(name: str) -> ClawConfig:
        return worker_config(config, node_id=name)

    async with (
        running_coordinator(config),
        running_worker(node("first")),
        running_worker(node("second")),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 2)
        submitted = await client.submit(spec("sleep", {"seconds": 7.5}))
        assert await client.wait([submitted.task_id], timeout_s=40) == {submitted.task_id: TaskState.SUCCEEDED}
        task = await client.get_task(submitted.task_id)
    assert task.attempts == 1
    assert [e.kind for e in task.events].count("started") == 1
    assert not any("ignored" in e.kind for e in task.events)


async def test_idempotency_key_survives_beyond_jetstreams_duplicate_window(
    private_nats: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = make_config(private_nats, prefix, tmp_path)
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        first = await client.submit(spec("echo", idempotency_key="invoice-1"))
        await client.wait([first.task_id], timeout_s=20)
    # A new NATS with an empty store has no memory of the message id; only the database remembers.
    fresh = EmbeddedNatsServer(NatsServerOptions(store_dir=tmp_path / "fresh", port=0, http_port=0)).start()
    try:
        config = make_config(fresh, prefix, tmp_path)
        async with running_coordinator(config), running_worker(config), connected_client(config) as client:
            await wait_nodes_online(client, 1)
            again = await client.submit(spec("echo", idempotency_key="invoice-1"))
            assert (again.task_id, again.duplicate) == (first.task_id, True)
            assert len(await client.list_tasks()) == 1
            stream = await client.conn.js.stream_info(client.conn.subjects.tasks_stream)
            assert stream.state.messages == 0  # nothing was published for the duplicate
    finally:
        fresh.kill()


async def test_a_resubmitted_request_with_client_chosen_ids_creates_nothing(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        specs = [spec("echo", {"n": i}, task_id=f"01M7XM000000000000000000{i:02d}") for i in range(3)]
        first = await client.submit_many(specs)
        second = await client.submit_many(specs)
        assert [r.task_id for r in second] == [r.task_id for r in first]
        assert all(r.duplicate for r in second) and not any(r.duplicate for r in first)
        assert len(await client.list_tasks()) == 3


async def test_a_task_cancelled_while_queued_runs_when_retried(config: ClawConfig) -> None:
    switch = Switch()
    async with (
        running_coordinator(config),
        running_worker(worker_config(config, concurrency=1), skills=switch.registry()),
        connected_client(config) as client,
    ):
        waiting_id = await cancel_one_queued_behind_a_blocker(client, switch, "not now")  # the worker remembers it
        # Within JetStream's duplicate window, and on a worker that saw the cancel: a new series.
        await client.retry(waiting_id)
        assert await client.wait([waiting_id], timeout_s=20) == {waiting_id: TaskState.SUCCEEDED}
        task = await client.get_task(waiting_id)
    assert len(switch.calls) == 2
    assert [(a.attempt, a.state) for a in task.attempt_log] == [(2, AttemptState.SUCCEEDED)]
    assert [e.kind for e in task.events if e.to_state][-4:] == ["retry", "queued", "started", "succeeded"]


async def test_a_read_right_after_a_submit_shows_what_the_submit_answered(
    config: ClawConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import coordinator.submission

    monkeypatch.setattr(coordinator.submission, "QUEUED_COMMIT_WAIT_S", 2.0)  # `queued` not written yet
    async with running_coordinator(config), connected_client(config) as client:
        submitted = await client.submit(spec("echo", {"n": 1}))
        shown = await client.get_task(submitted.task_id)
        listed = await client.list_tasks()
    assert submitted.state == shown.state == TaskState.QUEUED
    assert [(t.task_id, t.state) for t in listed] == [(submitted.task_id, TaskState.QUEUED)]


async def test_reclaiming_a_node_leaves_its_finished_and_retrying_tasks_alone(config: ClawConfig) -> None:
    switch = Switch()
    w1 = worker_config(config, node_id="w1")
    async with (
        running_coordinator(config) as coordinator,
        running_worker(w1, skills=switch.registry()),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        done = await client.submit(spec("echo", {"n": 1}))
        retrying = await client.submit(
            spec("flaky", max_attempts=3, backoff=Backoff(base_s=60, factor=1, max_s=60, jitter=0))
        )
        assert await client.wait([done.task_id], timeout_s=20) == {done.task_id: TaskState.SUCCEEDED}
        await eventually(
            lambda: coordinator.book.get(retrying.task_id).state == TaskState.RETRYING,  # type: ignore[union-attr]
            what="flaky waiting to retry",
        )
        # w1 claimed both deliveries; neither may be NAKed (acks match by sequence: a NAK would
        # hurry the retry past its backoff).
        assert await coordinator.operations.reclaim_node("w1") == 0
        finished = await client.get_task(done.task_id)
        waiting = await client.get_task(retrying.task_id)
    assert [(a.attempt, a.state) for a in finished.attempt_log] == [(1, AttemptState.SUCCEEDED)]
    assert waiting.state == TaskState.RETRYING and len(switch.calls) == 1


async def test_a_client_chosen_id_twice_in_one_request_makes_one_task(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        same = "01M7XM00000000000000000077"
        results = await client.submit_many([spec("echo", {"n": 1}, task_id=same), spec("echo", {"n": 2}, task_id=same)])
        assert [(r.task_id, r.duplicate) for r in results] == [(same, False), (same, True)]
        assert await client.wait([same], timeout_s=20) == {same: TaskState.SUCCEEDED}
        assert len(await client.list_tasks()) == 1


async def test_a_failed_commit_keeps_the_queued_step_of_the_task_before_it(
    config: ClawConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import coordinator.submission

    # Hold `queued` back until the next submit, so it rides with the commit that is made to fail.
    monkeypatch.setattr(coordinator.submission, "QUEUED_COMMIT_WAIT_S", 2.0)
    async with running_coordinator(config), connected_client(config) as client:
        with sqlite3.connect(config.coordinator.db_path) as db:  # a real failure, from SQLite itself
            db.execute(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON tasks WHEN NEW.input LIKE '%poison%' "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )
        first = await client.submit(spec("echo", {"n": 1}))
        with pytest.raises(ClawError, match="injected failure"):
            await client.submit(spec("echo", {"poison": True}))
        await client.submit(spec("echo", {"n": 3}))
        task = await client.get_task(first.task_id)
    assert task.state == TaskState.QUEUED
    assert [e.kind for e in task.events if e.to_state] == ["submitted", "queued"]


async def test_a_large_result_travels_through_the_artifact_store(config: ClawConfig) -> None:
    async def huge(ctx: TaskContext, input: dict[str, Any]) -> str:
        return "x" * 2_000_000

    skills = SkillRegistry([Skill("huge", huge)])
    async with running_coordinator(config), running_worker(config, skills=skills), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("huge", max_attempts=3))
        assert await client.wait([submitted.task_id], timeout_s=20) == {submitted.task_id: TaskState.SUCCEEDED}
        task = await client.get_task(submitted.task_id)
    [artifact] = task.artifacts
    assert (artifact.name, artifact.size, task.attempts) == ("result.json", 2_000_002, 1)
    assert msgspec.json.decode(bytes(task.result)) == {
        "$artifact": {
            "name": "result.json", "sha256": artifact.sha256, "size": 2_000_002, "content_type": "application/json",
            "backend": "local", "key": artifact.key,
        }
    }  # fmt: skip


async def test_a_task_id_with_a_trailing_newline_is_refused(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        with pytest.raises(InvalidInputError, match="task_id"):
            await client.submit(spec("echo", task_id="01M7XM00000000000000000000\n"))
