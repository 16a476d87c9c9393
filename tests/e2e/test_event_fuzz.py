"""A fuzzer publishes random and forged task events while real tasks run: the coordinator stays up,
quarantines what it cannot apply, and every real task ends as it should.

The generator is a seeded `random.Random` (set `CLAW_FUZZ_SEED` to replay a run; the seed is
printed). It sends garbage bytes, JSON of every shape (some nested thousands of levels deep), events
with fields of the wrong type or out of range, events for tasks that do not exist, and well-formed
`started`/`succeeded`/`failed`/`cancelled` events for tasks held for approval (which the transition
table forbids), plus notes and stale outcomes for the real tasks. It does not forge a well-formed
outcome for a real running attempt: until events are authenticated, such an event cannot be told
from the worker's own.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from common.config import NatsSettings
from common.events import (
    TaskArtifact,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskLog,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)
from common.ids import new_id
from common.models import ArtifactRef
from common.states import TaskState
from communication.api_client import ClawClient
from communication.codec import encode
from tests.helpers import ProcessPool, spec, wait_until

pytestmark = pytest.mark.e2e

FUZZ_EVENTS = 1500
ECHO_INPUTS = [{"n": i, "text": "\u00e9" * i} for i in range(24)]
OUTCOMES: tuple[type[TaskEvent], ...] = (TaskStarted, TaskSucceeded, TaskFailed, TaskCancelled)


def _node_of(data: bytes) -> str:
    try:
        node = json.loads(data).get("node_id")
    except (ValueError, AttributeError, RecursionError, UnicodeDecodeError):
        return "fuzz"
    return node if isinstance(node, str) and node.isalnum() else "fuzz"


class Fuzzer:
    """Makes one bad (or harmless) event at a time for a subject of its choosing."""

    def __init__(self, rng: random.Random, prefix: str, held: list[str], real: list[str]) -> None:
        self.rng = rng
        self.prefix = prefix
        self.held = held
        self.real = real
        self.sent: dict[str, int] = {}

    def next(self) -> tuple[str, bytes]:
        maker = self.rng.choice(
            [self.garbage, self.random_json, self.deep_json, self.wrong_fields, self.unknown_task,
             self.illegal_for_held, self.out_of_range, self.note_for_real, self.stale_outcome_for_real]
        )  # fmt: skip
        self.sent[maker.__name__] = self.sent.get(maker.__name__, 0) + 1
        task_id, data = maker()
        # A subject is one line of at most a few KB, its tokens non-empty: odd ids travel in the payload.
        token = task_id if task_id.isalnum() and len(task_id) <= 200 else new_id()
        # Published under the node the event names (as that node's credentials allow), so the fuzz
        # reaches folding; an event under another node's subject is refused before (tests/security).
        return f"{self.prefix}.events.{_node_of(data)}.{token}", data

    def any_id(self) -> str:
        return self.rng.choice([new_id(), "not-a-ulid", "x" * self.rng.randint(30, 3000), *self.held, *self.real])

    def garbage(self) -> tuple[str, bytes]:
        return self.any_id(), self.rng.randbytes(self.rng.randint(0, 300))

    def random_json(self) -> tuple[str, bytes]:
        return self.any_id(), json.dumps(self.value(0)).encode()

    def deep_json(self) -> tuple[str, bytes]:
        depth = self.rng.choice([70, 900, 3000, 20000])
        inner = b"[" * depth + b"]" * depth
        head = self.rng.choice([b"", b'{"kind":"started","task_id":"x","x":'])
        return self.any_id(), head + inner + (b"}" if head else b"")

    def forgeable(self) -> tuple[str, int]:
        """A held task with any attempt, or a real one with attempt 0 (stale: never a real attempt)."""
        if self.rng.random() < 0.5:
            return self.rng.choice(self.held), self.rng.randint(1, 3)
        return self.rng.choice(self.real), 0

    def wrong_fields(self) -> tuple[str, bytes]:
        task_id, attempt = self.forgeable()
        event = msgspec.json.decode(encode(self.event(self.rng.choice(OUTCOMES), task_id, attempt=attempt)))
        field = self.rng.choice(sorted(event))
        event[field] = self.value(0)
        if self.rng.random() < 0.3:
            event["kind"] = self.rng.choice(["exploded", "", 7, None])
        return task_id, json.dumps(event).encode()

    def unknown_task(self) -> tuple[str, bytes]:
        task_id = self.rng.choice([new_id(), "x" * 5000, "../../etc"])
        kind = self.rng.choice([*OUTCOMES, TaskProgress, TaskLog, TaskArtifact])
        return task_id, encode(self.event(kind, task_id))

    def illegal_for_held(self) -> tuple[str, bytes]:
        task_id = self.rng.choice(self.held)
        return task_id, encode(self.event(self.rng.choice(OUTCOMES), task_id, result=self.result()))

    def out_of_range(self) -> tuple[str, bytes]:
        task_id, attempt = self.forgeable()
        event = msgspec.json.decode(encode(self.event(self.rng.choice(OUTCOMES), task_id, attempt=attempt)))
        event["attempt"] = self.rng.choice([-1, -(2**40), 2**31, 2**70])
        return task_id, json.dumps(event).encode()

    def note_for_real(self) -> tuple[str, bytes]:
        task_id = self.rng.choice(self.real)
        return task_id, encode(self.event(self.rng.choice([TaskProgress, TaskLog]), task_id))

    def stale_outcome_for_real(self) -> tuple[str, bytes]:
        """Attempt 0 comes before any real attempt: fenced off, recorded as ignored."""
        task_id = self.rng.choice(self.real)
        return task_id, encode(self.event(self.rng.choice(OUTCOMES), task_id, attempt=0, result=self.result()))

    def event(self, kind: type[TaskEvent], task_id: str, *, attempt: int | None = None, result: bytes = b"1") -> Any:
        common = dict(
            event_id=new_id(), task_id=task_id, node_id=self.rng.choice(["fuzz", "w1", ""]),
            attempt=self.rng.randint(1, 3) if attempt is None else attempt, at=time.time() + self.rng.uniform(-99, 99),
        )  # fmt: skip
        if kind is TaskSucceeded:
            return TaskSucceeded(**common, result=msgspec.Raw(result), started_at=time.time())  # type: ignore[arg-type]
        if kind is TaskFailed:
            retry = self.rng.choice([None, 0.5])
            return TaskFailed(**common, error_type="Fuzz", message="forged", retry_in_s=retry)  # type: ignore[arg-type]
        if kind is TaskProgress:
            return TaskProgress(**common, percent=self.rng.uniform(-50, 150), message="fuzz")  # type: ignore[arg-type]
        if kind is TaskArtifact:
            ref = ArtifactRef(name="f", sha256="0" * 64, size=1, backend="local", key="sha256/00/" + "0" * 64)
            return TaskArtifact(**common, ref=ref)  # type: ignore[arg-type]
        return kind(**common)

    def result(self) -> bytes:
        return self.rng.choice([b"1", b'{"forged": true}', b'"\xff\xfe"', b'"' + b"y" * 10_000 + b'"'])

    def value(self, level: int) -> Any:
        roll = self.rng.random()
        if level > 4 or roll < 0.4:
            return self.rng.choice([0, -1, 2**70, 1.5, "", "s", None, True, "\u00e9\u0000"])
        if roll < 0.7:
            return [self.value(level + 1) for _ in range(self.rng.randint(0, 3))]
        return {str(self.value(level + 1)): self.value(level + 1) for _ in range(self.rng.randint(0, 3))}


def db_counts(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall())


async def test_random_and_forged_events_never_stop_the_coordinator_and_real_tasks_end_correctly(
    processes: ProcessPool, nats_server: Any, prefix: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CLAW_FUZZ_SEED", "20240611"))
    print(f"\nfuzz seed {seed} (CLAW_FUZZ_SEED={seed} replays this run)")
    rng = random.Random(seed)
    coordinator = processes.spawn("coordinator", "coordinator", "start")
    for node in ("w1", "w2"):
        processes.spawn("worker", "worker", "start", "--node-id", node, "--concurrency", "4")

    def online() -> bool:
        result = processes.run("nodes", "--json")
        return result.returncode == 0 and sum(n["status"] == "online" for n in json.loads(result.stdout)) == 2

    wait_until(online, timeout_s=40, interval_s=0.3, what="2 workers online")
    client = await ClawClient.connect(NatsSettings(url=nats_server.client_url, prefix=prefix))
    nc = await nats.connect(nats_server.client_url)
    try:
        held = [
            (await client.submit(spec("http.request", {"url": f"http://127.0.0.1:9/{i}"}))).task_id for i in range(3)
        ]
        inputs = {
            r.task_id: i
            for i, r in zip(ECHO_INPUTS, await client.submit_many([spec("echo", i) for i in ECHO_INPUTS]), strict=True)
        }
        sleeps = [r.task_id for r in await client.submit_many([spec("sleep", {"seconds": 1.0}) for _ in range(12)])]
        failing = [
            r.task_id
            for r in await client.submit_many(
                [spec("fail", {"message": "x", "retryable": True}, max_attempts=2) for _ in range(4)]
            )
        ]
        real = [*inputs, *sleeps, *failing]
        fuzzer = Fuzzer(rng, prefix, held, real)
        js = nc.jetstream()
        for i in range(FUZZ_EVENTS):
            subject, data = fuzzer.next()
            await js.publish(subject, data)
            if i % 100 == 0:  # more real work arriving while the fuzzer goes on
                late = await client.submit(spec("echo", {"late": i}))
                inputs[late.task_id] = {"late": i}
                real.append(late.task_id)
        print(f"sent {FUZZ_EVENTS} events: {fuzzer.sent}")

        ended = await client.wait(real, timeout_s=90)
        assert {ended[t] for t in inputs} | {ended[t] for t in sleeps} == {TaskState.SUCCEEDED}
        for task_id, expected in inputs.items():
            task = await client.get_task(task_id, history=False)
            assert msgspec.json.decode(bytes(task.result)) == expected, task
        for task_id in failing:
            task = await client.get_task(task_id, history=False)
            assert task.state == TaskState.DEAD and task.attempts == 2, task
        for task_id in held:
            assert (await client.get_task(task_id, history=False)).state == TaskState.WAITING_APPROVAL
    finally:
        await nc.close()
        await client.close()

    assert coordinator.alive
    quarantine = json.loads(processes.run("quarantine", "list", "--limit", "500", "--json").stdout)
    reasons = " ".join(q["reason"] for q in quarantine)
    assert len(quarantine) == 500 and "undecodable" in reasons and "there is no task" in reasons
    assert "does not apply to a task that is waiting_approval" in reasons
    # The state counts kept in memory (what `claw status` shows) still match the database.
    status = json.loads(processes.run("status", "--json").stdout)
    assert status["tasks_by_state"] == db_counts(tmp_path / "claw.db")
    log = coordinator.output()
    assert "events.fold_failed" not in log and "Traceback" not in log
    assert coordinator.stop() == 0
