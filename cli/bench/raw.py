"""The raw JetStream baseline of `claw bench`: the cheapest task round trip nats-py allows here.

No cluster code is on this path: a stream of its own (`BENCH_RAW`, work-queue retention, file
storage like the cluster's task stream), one durable pull consumer, and a second process
(`python -m cli.bench.raw URL`) that fetches in batches of 256, acks each message (`ack()`, no
round trip) and publishes the task's bytes back as its result with a **core** publish on
`benchraw.results`. The benchmark process publishes the tasks with `publish_async` and a bounded
window of pending acks, and counts the results it receives.

Its two figures are what the cluster is compared with: throughput (N tasks, first publish to last
result) and the round-trip latency with one task in flight.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass

import msgspec
import nats
import psutil
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from cli.bench.errors import BenchError
from cli.bench.probes import busy_cpu_seconds, cpu_seconds
from cli.processes import Child, Launcher
from cli.runner import run_loop
from common.ids import new_id
from common.models import TaskMessage
from common.states import Priority

STREAM = "BENCH_RAW"
CONSUMER = "bench-raw-worker"
TASK_SUBJECT = "benchraw.tasks.echo"
RESULTS_SUBJECT = "benchraw.results"
READY_SUBJECT = "benchraw.ready"
FETCH_BATCH = 256
PUBLISH_WINDOW = 500
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class RawBenchError(BenchError):
    """The baseline could not be measured (the worker process died or results went missing)."""


@dataclass
class RawResult:
    """What the baseline measured; `cpu_s`: CPU seconds of each watched process during the throughput run."""

    n: int
    elapsed_s: float
    throughput_tps: float
    latencies_s: list[float]
    cpu_s: dict[str, float]
    others_cpu_share: float


def task_payload() -> bytes:
    """A task message of the size and shape the cluster publishes (a small `echo`)."""
    message = TaskMessage(
        task_id=new_id(),
        skill="echo",
        input=msgspec.Raw(b'{"i": 1}'),
        priority=Priority.NORMAL,
        timeout_s=300.0,
        max_attempts=3,
        submitted_at=time.time(),
    )
    return msgspec.json.encode(message)


async def measure_raw(
    url: str,
    *,
    n: int,
    latency_count: int,
    launcher: Launcher,
    watch: dict[str, psutil.Process],
    warmup: int = 50,
) -> RawResult:
    """Set up the stream, start the worker process through `launcher`, measure, delete the stream.

    The CPU time of the `watch`ed processes and of the worker process (`worker`) is taken around
    the throughput run.
    """
    nc = await nats.connect(url, name="bench-raw-client")
    try:
        js = nc.jetstream(publish_async_max_pending=PUBLISH_WINDOW)
        await _create_stream(js)
        results = _Results()
        await nc.subscribe(RESULTS_SUBJECT, cb=results.on_result)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_ready(msg: Msg) -> None:
            if not ready.done():
                ready.set_result(None)

        await nc.subscribe(READY_SUBJECT, cb=on_ready)
        await nc.flush()
        worker = launcher.spawn(
            "raw-worker", [sys.executable, "-m", "cli.bench.raw", url], stop_timeout_s=STOP_TIMEOUT_S
        )
        try:
            await _wait_ready(ready, worker)
            watched = watch | {"worker": psutil.Process(worker.pid)}
            cpu_before = {name: cpu_seconds(p) for name, p in watched.items()}
            busy_before = busy_cpu_seconds()
            elapsed_s = await _throughput(js, results, n)
            cpu_s = {name: cpu_seconds(p) - cpu_before[name] for name, p in watched.items()}
            others_s = max(busy_cpu_seconds() - busy_before - sum(cpu_s.values()), 0.0)
            latencies = await _latencies(js, results, warmup, latency_count)
        finally:
            # Before the stream goes, so the worker never pulls from a deleted one.
            await asyncio.to_thread(worker.stop)
        await js.delete_stream(STREAM)
        return RawResult(
            n=n,
            elapsed_s=elapsed_s,
            throughput_tps=n / elapsed_s,
            latencies_s=latencies,
            cpu_s=cpu_s,
            others_cpu_share=others_s / (elapsed_s * (os.cpu_count() or 1)),
        )
    finally:
        await nc.close()


class _Results:
    """Counts results as they arrive and remembers when the last one came."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.last_at = 0.0
        self.reached = asyncio.Event()

    def expect(self, more: int) -> None:
        self.target = self.count + more
        self.reached.clear()

    async def on_result(self, msg: Msg) -> None:
        self.count += 1
        self.last_at = time.perf_counter()
        if self.count >= self.target:
            self.reached.set()


async def _create_stream(js: nats.js.JetStreamContext) -> None:
    await js.add_stream(
        api.StreamConfig(
            name=STREAM,
            subjects=[TASK_SUBJECT],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
        )
    )
    await js.add_consumer(
        STREAM,
        api.ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=30.0,
            max_ack_pending=20_000,
        ),
    )


async def _wait_ready(ready: asyncio.Future[None], worker: Child) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.done():
        if not worker.alive:
            raise RawBenchError(f"the raw worker process exited with code {worker.returncode}; see {worker.log_path}")
        if time.monotonic() > deadline:
            raise RawBenchError(
                f"the raw worker process was not ready within {READY_TIMEOUT_S:g} s; see {worker.log_path}"
            )
        await asyncio.wait([ready], timeout=0.1)


async def _throughput(js: nats.js.JetStreamContext, results: _Results, n: int) -> float:
    """Publish `n` tasks pipelined; seconds from the first publish to the last result."""
    payloads = [task_payload() for _ in range(n)]
    results.expect(n)
    started = time.perf_counter()
    for payload in payloads:
        await js.publish_async(TASK_SUBJECT, payload)
    await js.publish_async_completed()
    try:
        await asyncio.wait_for(results.reached.wait(), timeout=max(30.0, n / 500))
    except TimeoutError:
        raise RawBenchError(f"only {results.count} of {results.target} raw results arrived") from None
    return results.last_at - started


async def _latencies(js: nats.js.JetStreamContext, results: _Results, warmup: int, count: int) -> list[float]:
    """One task in flight: publish (awaiting the PubAck), then wait for its result."""
    latencies = []
    for i in range(warmup + count):
        payload = task_payload()
        results.expect(1)
        started = time.perf_counter()
        await js.publish(TASK_SUBJECT, payload)
        try:
            await asyncio.wait_for(results.reached.wait(), timeout=10.0)
        except TimeoutError:
            raise RawBenchError("a raw round trip took more than 10 s") from None
        if i >= warmup:
            latencies.append(results.last_at - started)
    return latencies


# --- the worker process ---------------------------------------------------------------------------


async def serve_raw_worker(url: str) -> None:
    """Fetch, ack, reply until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    nc: NatsClient = await nats.connect(url, name="bench-raw-worker")
    try:
        sub = await nc.jetstream().pull_subscribe_bind(CONSUMER, STREAM)
        await nc.publish(READY_SUBJECT, b"")
        await nc.flush()
        while not stop.is_set():
            try:
                msgs = await sub.fetch(FETCH_BATCH, timeout=0.5)
            except TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
                await nc.publish(RESULTS_SUBJECT, msg.data)
    finally:
        await nc.drain()


def main() -> None:
    """`python -m cli.bench.raw NATS_URL`: the baseline's worker process."""
    run_loop(serve_raw_worker(sys.argv[1]))


if __name__ == "__main__":
    main()
