"""What `claw bench` measures on a running cluster: idle RSS, submit and end-to-end latencies,
whole `claw submit` processes, and the no-op throughput with the CPU time of every process."""

from __future__ import annotations

import asyncio
import getpass
import os
import subprocess
import sys
import time
from typing import Any

import msgspec
import psutil

from cli.bench.errors import BenchError
from cli.bench.options import BenchOptions
from cli.bench.probes import RssSampler, StateDb, busy_cpu_seconds, cpu_seconds, rss_bytes
from cli.bench.profile import Profiler
from cli.bench.report import ClusterRun
from cli.cluster import ClusterProcesses
from cli.inputs import read_inputs
from cli.processes import Launcher, child_env, claw_command
from common.ids import ulid_floor
from common.models import TaskSpec
from common.states import TERMINAL_STATES, Priority, TaskState
from communication.api_client import ClawClient

# Seconds a fresh cluster is left alone before its idle RSS is read.
IDLE_SETTLE_S = 1.0


def progress(message: str) -> None:
    """A line about what the benchmark is doing, on stderr (stdout has the table)."""
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


def processes_of(cluster: ClusterProcesses) -> dict[str, psutil.Process]:
    """The running processes of the cluster by name: coordinator, worker-1..W."""
    return {name: psutil.Process(pid) for name, pid in cluster.pids().items()}


async def measure_cluster(
    options: BenchOptions, cluster: ClusterProcesses, nats_process: psutil.Process, launcher: Launcher
) -> ClusterRun:
    """Idle RSS, the latencies (on the cluster with the most workers), then the throughput."""
    run = ClusterRun(workers=cluster.workers)
    processes = processes_of(cluster)
    db = StateDb(cluster.db_path)
    try:
        async with await ClawClient.connect(cluster.settings, name="claw-bench") as client:
            with RssSampler(processes) as sampler:
                await asyncio.sleep(IDLE_SETTLE_S)
                run.idle_rss = {name: rss_bytes(p) for name, p in processes.items()}
                if cluster.workers == options.latency_workers:
                    run.latencies = await _latencies(options, client, cluster, db)
                await _wait_idle(db, cluster)
                profiler = None
                if options.profile_dir is not None and cluster.workers == options.latency_workers:
                    targets = {"coordinator": processes["coordinator"].pid, "worker-1": processes["worker-1"].pid}
                    profiler = Profiler(launcher, options.profile_dir, targets)
                progress(f"throughput: {options.n} echo tasks with {cluster.workers} worker(s)")
                run.throughput = await _throughput(options.n, client, cluster, db, processes, nats_process, profiler)
                progress(f"throughput: {run.throughput['tps']:,.0f} tasks/s")
                if profiler is not None:
                    run.profile = {name: str(path) for name, path in (await asyncio.to_thread(profiler.stop)).items()}
            run.peak_rss = dict(sampler.peaks)
        db_bytes, wal_bytes = await asyncio.to_thread(db.file_sizes)
        tasks = sum((await asyncio.to_thread(db.counts)).values())
        run.sqlite = {"db_bytes": db_bytes, "wal_bytes": wal_bytes, "tasks": tasks}
    finally:
        db.close()
    return run


async def _latencies(
    options: BenchOptions, client: ClawClient, cluster: ClusterProcesses, db: StateDb
) -> dict[str, list[float]]:
    count = options.latency_count
    progress(f"submit latency: {count} x ClawClient.submit and {count} x the claw submit code path, alternating")
    found = await _submit_latencies(client, count, options.warmup)
    progress(f"claw submit as a whole process: {options.cli_runs} runs")
    found["cli_process"] = await _cli_process_latency(cluster, options.cli_runs)
    await _wait_idle(db, cluster)
    progress(f"end-to-end latency: {options.e2e_count} tasks, one in flight")
    found["e2e"] = await _e2e_latency(client, options.e2e_count, min(options.warmup, 20))
    return found


def _echo(i: int) -> TaskSpec:
    return TaskSpec(skill="echo", input=msgspec.Raw(b'{"i": %d}' % i))


async def _submit_latencies(client: ClawClient, count: int, warmup: int) -> dict[str, list[float]]:
    """One submit at a time, alternating the two paths so that both see the same conditions.

    - `submit`: `ClawClient.submit(spec)`; the reply comes once the task is persisted and published.
    - `cli_submit`: what `claw submit echo --input JSON` does once connected - read the input, build
      the spec, `submit_many` of one task (the process around it: `_cli_process_latency`).
    """
    found: dict[str, list[float]] = {"submit": [], "cli_submit": []}
    for i in range(warmup + count):
        spec = _echo(i)
        started = time.perf_counter()
        await client.submit(spec)
        api_s = time.perf_counter() - started

        text = f'{{"i": {i}}}'
        started = time.perf_counter()
        specs = [
            TaskSpec(skill="echo", input=raw, priority=Priority.NORMAL, timeout_s=None, max_attempts=None)
            for raw in read_inputs(text, None)
        ]
        await client.submit_many(specs, submitter=getpass.getuser())
        cli_s = time.perf_counter() - started
        if i >= warmup:
            found["submit"].append(api_s)
            found["cli_submit"].append(cli_s)
    return found


async def _cli_process_latency(cluster: ClusterProcesses, runs: int) -> list[float]:
    """Whole `claw submit echo` processes (`python -m cli`): interpreter start-up, imports, connect."""
    argv = claw_command("--nats", cluster.settings.url, "submit", "echo", "--input", '{"i": 1}')
    env = child_env(CLAW_NATS_PREFIX=cluster.prefix)
    latencies = []
    for i in range(runs + 1):  # the first run warms the file cache
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            _, stderr = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0:
            raise BenchError(f"`claw submit` exited with {process.returncode}: {stderr.decode(errors='replace')}")
        if i > 0:
            latencies.append(time.perf_counter() - started)
    return latencies


async def _e2e_latency(client: ClawClient, count: int, warmup: int) -> list[float]:
    """One task in flight: `submit`, then `wait` until it is `succeeded` as the coordinator sees it."""
    latencies = []
    for i in range(warmup + count):
        spec = _echo(i)
        started = time.perf_counter()
        result = await client.submit(spec)
        final = await client.wait([result.task_id], timeout_s=30)
        elapsed = time.perf_counter() - started
        if final[result.task_id] != TaskState.SUCCEEDED:
            raise BenchError(f"echo task {result.task_id} ended {final[result.task_id].value}")
        if i >= warmup:
            latencies.append(elapsed)
    return latencies


async def _wait_idle(db: StateDb, cluster: ClusterProcesses, timeout_s: float = 120.0) -> None:
    """Until every task in the database is finished (a run must not inherit a backlog)."""
    terminal = {s.value for s in TERMINAL_STATES}
    deadline = time.monotonic() + timeout_s
    while True:
        counts = await asyncio.to_thread(db.counts)
        if all(state in terminal for state in counts):
            return
        cluster.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"tasks still unfinished after {timeout_s:g} s: {counts}")
        await asyncio.sleep(0.05)


async def _throughput(
    n: int,
    client: ClawClient,
    cluster: ClusterProcesses,
    db: StateDb,
    processes: dict[str, psutil.Process],
    nats_process: psutil.Process,
    profiler: Profiler | None,
) -> dict[str, Any]:
    """N no-op tasks through `submit_many`, from the first submit to the last `succeeded` in SQLite."""
    specs = [_echo(i) for i in range(n)]
    # Task ids are ULIDs, which sort by time: counting only ids made after this moment skips the
    # tasks stored before the run (a prefilled database holds a million), so polling stays cheap.
    # The lowest id of this millisecond: the coordinator's ids of the same millisecond sort after it.
    since = ulid_floor(time.time())
    target = await asyncio.to_thread(db.succeeded, since) + n
    watched = {**processes, "nats": nats_process, "bench": psutil.Process()}
    if profiler is not None:
        profiler.start()
    cpu_before = {name: cpu_seconds(p) for name, p in watched.items()}
    busy_before = busy_cpu_seconds()
    started = time.perf_counter()
    submitting = asyncio.create_task(client.submit_many(specs))
    submitted_at: list[float] = []
    submitting.add_done_callback(lambda _: submitted_at.append(time.perf_counter()))
    try:
        finished = await _until_succeeded(db, since, target, submitting, cluster, timeout_s=max(120.0, n / 100))
        await submitting
    finally:
        submitting.cancel()
    cpu_used = {name: cpu_seconds(p) - cpu_before[name] for name, p in watched.items()}
    others_s = max(busy_cpu_seconds() - busy_before - sum(cpu_used.values()), 0.0)
    elapsed = finished - started
    return {
        "n": n,
        "elapsed_s": elapsed,
        "tps": n / elapsed,
        "submit_s": submitted_at[0] - started,
        "submit_tps": n / (submitted_at[0] - started),
        "cpu_s": cpu_used,
        # CPU used meanwhile by processes the benchmark did not start (other people's work, py-spy).
        "others_cpu_share": others_s / (elapsed * (os.cpu_count() or 1)),
    }


async def _until_succeeded(
    db: StateDb, since: str, target: int, submitting: asyncio.Task[Any], cluster: ClusterProcesses, *, timeout_s: float
) -> float:
    """The time at which `target` tasks were seen succeeded.

    Polls the database often only near the end (the interval shrinks with the estimated time left),
    so that polling costs little CPU while the end is still timed within a few milliseconds.
    """
    deadline = time.monotonic() + timeout_s
    last_count, last_at = 0, time.perf_counter()
    while True:
        count = await asyncio.to_thread(db.succeeded, since)
        now = time.perf_counter()
        if count >= target:
            return now
        if submitting.done() and submitting.exception() is not None:
            raise BenchError(f"submitting failed: {submitting.exception()}")
        cluster.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"only {count} of {target} tasks succeeded within {timeout_s:g} s")
        rate = (count - last_count) / (now - last_at) if count > last_count else 0.0
        last_count, last_at = count, now
        interval_s = 0.1 if rate <= 0 else min(0.1, max(0.003, (target - count) / rate / 4))
        await asyncio.sleep(interval_s)


async def throughput_only(n: int, cluster: ClusterProcesses, nats_process: psutil.Process) -> ClusterRun:
    """Only the throughput (and the peak RSS during it): the runs compared with a measured one."""
    run = ClusterRun(workers=cluster.workers)
    processes = processes_of(cluster)
    db = StateDb(cluster.db_path)
    try:
        async with await ClawClient.connect(cluster.settings, name="claw-bench") as client:
            with RssSampler(processes) as sampler:
                run.throughput = await _throughput(n, client, cluster, db, processes, nats_process, None)
            run.peak_rss = dict(sampler.peaks)
    finally:
        db.close()
    return run
