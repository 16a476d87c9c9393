"""Using the cluster from Python with `ClawClient` (docs/Python_client.md walks through it).

With a cluster running (`claw up`, or `./scripts/up.sh`):

    python examples/python_client.py                      # nats://127.0.0.1:4222, or $CLAW_NATS_URL
    python examples/python_client.py --nats nats://host:4222

It submits one task and waits for its result, follows a task's progress live, submits a batch and
waits for all of it, cancels a task, and shows what a refused request raises. Exits 0 when all of
that went as described.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import msgspec

from common import (
    ClawError,
    LogSettings,
    Priority,
    TaskProgress,
    TaskSpec,
    TaskState,
    UnknownSkillError,
    configure_logging,
    load_config,
)
from communication import ClawClient


def task(skill: str, input: dict[str, Any], **options: Any) -> TaskSpec:
    """A task spec (options: priority, timeout_s, max_attempts, idempotency_key); the input as JSON."""
    return TaskSpec(skill=skill, input=msgspec.Raw(msgspec.json.encode(input)), **options)


async def main(nats_url: str | None) -> None:
    # The same settings as `claw`: defaults, $CLAW_CONFIG, CLAW_* variables, then what is given here.
    config = load_config(overrides={"nats": {"url": nats_url}})
    # The client logs connection events (retries, reconnects) through structlog: errors only here.
    configure_logging(LogSettings(level="error"), process="python-client-example")
    async with await ClawClient.connect(config.nats, name="python-client-example") as client:
        # One task: submit returns once the task is stored and queued; wait until it has ended.
        submitted = await client.submit(task("echo", {"hello": "world"}))
        states = await client.wait([submitted.task_id], timeout_s=60)
        done = await client.get_task(submitted.task_id, history=False)
        print(f"echo {submitted.task_id}: {states[submitted.task_id].value}, result {bytes(done.result).decode()}")

        # Follow a running task: its events, live, until it ends.
        sleeper = await client.submit(task("sleep", {"seconds": 2}))
        async for event in client.watch(sleeper.task_id):
            if isinstance(event, TaskProgress) and event.percent is not None:
                print(f"sleep {sleeper.task_id}: {event.percent:.0f}% {event.message}")
        print(f"sleep {sleeper.task_id}: {(await client.get_task(sleeper.task_id, history=False)).state.value}")

        # Many tasks: as few requests as fit, results in the order given.
        batch = await client.submit_many([task("echo", {"n": n}, priority=Priority.HIGH) for n in range(5)])
        finished = await client.wait([r.task_id for r in batch], timeout_s=60)
        print(f"batch: {sum(s == TaskState.SUCCEEDED for s in finished.values())} of {len(batch)} succeeded")

        # Cancel: a queued task never runs, a running one is stopped on its worker.
        long = await client.submit(task("sleep", {"seconds": 60}))
        reply = await client.cancel(long.task_id, reason="example: not needed")
        print(f"cancel {long.task_id}: {reply.state.value}")

        # A refused request raises the error class the coordinator raised, with a message for people.
        try:
            await client.submit(task("no.such.skill", {}))
        except UnknownSkillError as exc:
            print(f"refused ({exc.code}): {exc}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nats", help="NATS URL [default: $CLAW_NATS_URL, else nats://127.0.0.1:4222]")
    try:
        asyncio.run(main(parser.parse_args().nats))
    except ClawError as exc:  # NATS down, no coordinator, ...: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None
