"""`claw bench` (also `python scripts/bench.py`): the cluster's figures next to the raw JetStream
round trip, measured in one run on one machine. docs/Performance.md explains each figure.

One run starts, in a temporary directory, a nats-server on free ports and then:

1. the raw baseline (`cli.bench_raw`): a stream of its own and a second process that fetches,
   acks and replies - throughput and one-in-flight round-trip latency;
2. for each worker count W (default 1 and 2), a fresh cluster - a coordinator and W workers as real
   processes (`cli.bench_cluster`), its own prefix and database, the same nats-server - on which it
   measures idle RSS, then (on the cluster with the most workers only) submit latency through
   `ClawClient.submit`, through the code path of `claw submit`, whole `claw submit` processes, and
   end-to-end latency with one task in flight, and last the no-op throughput: N `echo` tasks through
   `submit_many`, from the first submit until the last is `succeeded` in SQLite, with the CPU time
   and peak RSS of every process and the database's size;
3. with `--tracing`, the throughput once more on a fresh cluster with the most workers whose
   processes record every span (or those of `--trace-sample-ratio` of the tasks) and export them
   over OTLP to a counting sink (`cli.bench_span_sink`, a process of its own), compared with the
   untraced run of the same worker count.

The measuring code is the only code added: the cluster runs exactly as `claw up` runs it. Every
process it starts is stopped in a `finally`, on Ctrl-C and on errors too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import getpass
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import msgspec
import psutil

from cli.bench_cluster import (
    ROOT,
    BenchCluster,
    BenchError,
    Children,
    RssSampler,
    StateDb,
    busy_cpu_seconds,
    child_env,
    cpu_seconds,
    rss_bytes,
)
from cli.bench_prefill import prefill_database
from cli.bench_profile import Profiler
from cli.bench_raw import RawBenchError, measure_raw
from cli.bench_report import ClusterRun, PrefilledRun, TracingRun, build_report, environment, render_table
from cli.inputs import read_inputs
from common.config import LogSettings
from common.errors import ClawError
from common.ids import ulid_floor
from common.log import configure_logging
from common.models import TaskSpec
from common.states import TERMINAL_STATES, Priority, TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions

T = TypeVar("T")

DEFAULT_N = 50_000
DEFAULT_CONCURRENCY = 64
IDLE_SETTLE_S = 1.0


@dataclass(frozen=True)
class BenchOptions:
    """What to run; `--quick` shrinks every count to a smoke test of the benchmark itself."""

    n: int = DEFAULT_N
    workers: tuple[int, ...] = (1, 2)
    concurrency: int = DEFAULT_CONCURRENCY
    json_path: Path | None = None
    quick: bool = False
    keep: bool = False
    profile_dir: Path | None = None
    tracing: bool = False
    trace_sample_ratio: float = 1.0
    prefill: int = 0
    latency_count: int = 1000
    e2e_count: int = 400
    cli_runs: int = 10
    warmup: int = 50

    @property
    def latency_workers(self) -> int:
        """The latencies are measured on the cluster with the most workers."""
        return max(self.workers)


QUICK = {"n": 1000, "latency_count": 30, "e2e_count": 20, "cli_runs": 2, "warmup": 5}


def parse_args(argv: Sequence[str] | None = None, prog: str = "claw bench") -> BenchOptions:
    """The command line of `claw bench` and `scripts/bench.py` (one parser for both)."""
    args = build_parser(prog).parse_args(argv)
    sizes: dict[str, Any] = dict(QUICK) if args.quick else {}
    if args.n is not None:
        sizes["n"] = args.n
    return BenchOptions(
        workers=args.workers,
        concurrency=args.concurrency,
        json_path=args.json_path,
        quick=args.quick,
        keep=args.keep,
        profile_dir=args.profile_dir,
        tracing=args.tracing,
        trace_sample_ratio=args.trace_sample_ratio,
        prefill=args.prefill or 0,
        **sizes,
    )


def build_parser(prog: str = "claw bench") -> argparse.ArgumentParser:
    """The benchmark's options (`claw bench --help` draws them like the other commands' help)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark an embedded cluster (real processes) against the raw JetStream round trip.",
    )
    parser.add_argument(
        "--n", type=_positive, help=f"tasks per throughput run [default: {DEFAULT_N}; quick: {QUICK['n']}]"
    )
    parser.add_argument("--workers", type=_worker_list, default=(1, 2), help="worker counts to run [default: 1,2]")
    parser.add_argument(
        "--concurrency",
        type=_positive,
        default=DEFAULT_CONCURRENCY,
        help=f"--concurrency of each worker process [default: {DEFAULT_CONCURRENCY}]",
    )
    parser.add_argument(
        "--json", dest="json_path", type=Path, metavar="FILE", help="also write the figures as JSON to FILE"
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks the benchmark runs, not the figures")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    parser.add_argument(
        "--profile",
        dest="profile_dir",
        type=Path,
        metavar="DIR",
        help="py-spy the coordinator and worker-1 during the throughput run with the most workers",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also run the throughput with every span exported over OTLP (to a counting sink) and report the cost",
    )
    parser.add_argument(
        "--trace-sample-ratio",
        type=_ratio,
        default=1.0,
        metavar="R",
        help="with --tracing: the share of tasks whose spans are recorded (tracing.sample_ratio) [default: 1.0]",
    )
    parser.add_argument(
        "--prefill",
        type=_positive,
        metavar="N",
        help="also run the throughput on a database already holding N finished tasks (e.g. 1000000)",
    )
    return parser


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, not {value:g}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _worker_list(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError("worker counts must be 1 or more")
    return counts


def main(argv: Sequence[str] | None = None, prog: str = "claw bench") -> int:
    """Run the benchmark, print the table, write the JSON; the process's exit code."""
    options = parse_args(argv, prog)
    # The client library logs connection events at info; the table is what this command prints.
    configure_logging(LogSettings(level="warning", format="console"), process="bench")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = run(options)
    except (ClawError, RawBenchError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; every process the benchmark started is stopped\n")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(render_table(report))
    if options.json_path is not None:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(report, indent=2) + "\n")
        _progress(f"JSON written to {options.json_path}")
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(options: BenchOptions) -> dict[str, Any]:
    """Start everything in a temporary directory, measure, and stop everything; returns the report."""
    workdir = Path(tempfile.mkdtemp(prefix="claw-bench-"))
    children = Children()
    try:
        return _run_loop(_bench(options, workdir, children))
    finally:
        with _uninterruptible():
            children.stop_all()
        if options.keep:
            _progress(f"kept {workdir} (logs in */logs/, databases in cluster-w*/claw.db)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while children are stopped: a second Ctrl-C must not strand them
    (each stop is bounded: SIGKILL after a timeout)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed, as the `claw` processes do."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result


def _progress(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


# --- the run --------------------------------------------------------------------------------------


async def _bench(options: BenchOptions, workdir: Path, children: Children) -> dict[str, Any]:
    started = time.time()
    load_before = os.getloadavg()
    logs = workdir / "logs"
    nats = EmbeddedNatsServer(
        NatsServerOptions(store_dir=workdir / "nats", port=0, http_port=0, log_file=logs / "nats-server.log")
    )
    children.nats = nats
    _progress(f"starting nats-server in {workdir}")
    await nats.start_async()
    assert nats.pid is not None
    nats_process = psutil.Process(nats.pid)

    _progress(f"raw JetStream baseline: {options.n} tasks, then {options.latency_count} round trips")
    raw = await measure_raw(
        nats.client_url,
        n=options.n,
        latency_count=options.latency_count,
        warmup=options.warmup,
        log_path=logs / "raw-worker.log",
        spawn=functools.partial(children.spawn, cwd=workdir),
        watch={"nats": nats_process, "client": psutil.Process()},
    )
    _progress(f"raw: {raw.throughput_tps:,.0f} tasks/s")

    runs: list[ClusterRun] = []
    for workers in options.workers:
        cluster = BenchCluster(
            children,
            nats,
            workdir / f"cluster-w{workers}",
            prefix=f"bench_w{workers}",
            workers=workers,
            concurrency=options.concurrency,
            queue_limit=options.n + 10_000,
        )
        _progress(f"cluster with {workers} worker(s) (concurrency {options.concurrency}): starting")
        try:
            await cluster.start()
            runs.append(await _measure_cluster(options, cluster, nats_process, children))
        finally:
            await cluster.stop()
    baseline = next(r for r in runs if r.workers == options.latency_workers)
    tracing = None
    if options.tracing:
        tracing = await _measure_tracing(options, workdir, children, nats, nats_process, baseline)
    prefilled = None
    if options.prefill:
        prefilled = await _measure_prefilled(options, workdir, children, nats, nats_process, baseline)
    meta = environment(started, nats.command()[0], ROOT) | {
        "n": options.n,
        "workers": list(options.workers),
        "worker_concurrency": options.concurrency,
        "latency_samples": options.latency_count,
        "e2e_samples": options.e2e_count,
        "quick": options.quick,
        "profiled": options.profile_dir is not None,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "duration_s": round(time.time() - started, 1),
    }
    return build_report(meta, raw=raw, runs=runs, tracing=tracing, prefilled=prefilled)


async def _measure_prefilled(
    options: BenchOptions,
    workdir: Path,
    children: Children,
    nats: EmbeddedNatsServer,
    nats_process: psutil.Process,
    baseline: ClusterRun,
) -> PrefilledRun:
    """The throughput again, on a cluster whose database already holds `--prefill` finished tasks."""
    root = workdir / "cluster-prefilled"
    root.mkdir(parents=True, exist_ok=True)
    _progress(f"prefill: writing {options.prefill:,} finished tasks into a fresh database")
    fill_s = await prefill_database(
        root / "claw.db", options.prefill, progress=lambda done: _progress(f"prefill: {done:,} tasks")
    )
    workers = options.latency_workers
    cluster = BenchCluster(
        children,
        nats,
        root,
        prefix="bench_prefilled",
        workers=workers,
        concurrency=options.concurrency,
        queue_limit=options.n + 10_000,
    )
    _progress(f"prefill: {options.n} echo tasks with {workers} worker(s) on the filled database")
    try:
        start = time.perf_counter()
        await cluster.start()
        ready_s = time.perf_counter() - start
        processes = cluster.processes()
        await asyncio.sleep(IDLE_SETTLE_S)
        idle_rss = rss_bytes(processes["coordinator"])
        run = await _throughput_only(options.n, cluster, nats_process)
        run.idle_rss = {"coordinator": idle_rss}
    finally:
        await cluster.stop()
    db_bytes, wal_bytes = await asyncio.to_thread(StateDb(cluster.db_path).file_sizes)
    _progress(f"prefill: {run.throughput['tps']:,.0f} tasks/s with {options.prefill:,} stored")
    return PrefilledRun(
        run=run,
        baseline=baseline,
        stored=options.prefill,
        fill_s=fill_s,
        ready_s=ready_s,
        db_bytes=db_bytes + wal_bytes,
    )


async def _measure_tracing(
    options: BenchOptions,
    workdir: Path,
    children: Children,
    nats: EmbeddedNatsServer,
    nats_process: psutil.Process,
    baseline: ClusterRun,
) -> TracingRun:
    """The throughput again, on a fresh cluster whose processes record and export every span."""
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
        raise BenchError("--tracing needs the OTLP exporter: pip install 'openclaw-cluster[otel]'")
    port_file = workdir / "span-sink.port"
    sink = children.spawn(
        "span-sink",
        [sys.executable, "-m", "cli.bench_span_sink", str(port_file)],
        workdir / "logs" / "span-sink.log",
        cwd=workdir,
    )
    try:
        endpoint = f"http://127.0.0.1:{await _port_from(port_file, sink)}"
        workers = options.latency_workers
        cluster = BenchCluster(
            children,
            nats,
            workdir / "cluster-traced",
            prefix="bench_traced",
            workers=workers,
            concurrency=options.concurrency,
            queue_limit=options.n + 10_000,
            extra_env={
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "CLAW_TRACING_SAMPLE_RATIO": str(options.trace_sample_ratio),
            },
        )
        _progress(
            f"tracing: {options.n} echo tasks with {workers} worker(s), spans of {options.trace_sample_ratio:.0%}"
            " of them exported over OTLP"
        )
        try:
            await cluster.start()
            run = await _throughput_only(options.n, cluster, nats_process)
        finally:
            await cluster.stop()  # the processes flush their last spans as they exit
        spans = await asyncio.to_thread(_sink_count, endpoint)
        _progress(f"tracing: {run.throughput['tps']:,.0f} tasks/s, {spans:,} spans exported")
        return TracingRun(run=run, baseline=baseline, spans=spans, sample_ratio=options.trace_sample_ratio)
    finally:
        await asyncio.to_thread(Children.stop, sink)


async def _throughput_only(n: int, cluster: BenchCluster, nats_process: psutil.Process) -> ClusterRun:
    run = ClusterRun(workers=cluster.workers)
    processes = cluster.processes()
    db = StateDb(cluster.db_path)
    try:
        async with await ClawClient.connect(cluster.settings, name="claw-bench") as client:
            with RssSampler(processes) as sampler:
                run.throughput = await _throughput(n, client, cluster, db, processes, nats_process, None)
            run.peak_rss = dict(sampler.peaks)
    finally:
        db.close()
    return run


async def _port_from(port_file: Path, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"the span sink exited with code {process.returncode}; see its log in logs/")
        text = await asyncio.to_thread(lambda: port_file.read_text() if port_file.exists() else "")
        if text.strip():
            return int(text)
        await asyncio.sleep(0.05)
    raise BenchError(f"the span sink did not start within {timeout_s:g} s")


def _sink_count(endpoint: str) -> int:
    with urllib.request.urlopen(f"{endpoint}/count", timeout=10) as reply:  # noqa: S310 - our loopback sink
        return int(json.load(reply)["spans"])


async def _measure_cluster(
    options: BenchOptions, cluster: BenchCluster, nats_process: psutil.Process, children: Children
) -> ClusterRun:
    run = ClusterRun(workers=cluster.workers)
    processes = cluster.processes()
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
                    profiler = Profiler(children, options.profile_dir, targets)
                _progress(f"throughput: {options.n} echo tasks with {cluster.workers} worker(s)")
                run.throughput = await _throughput(options.n, client, cluster, db, processes, nats_process, profiler)
                _progress(f"throughput: {run.throughput['tps']:,.0f} tasks/s")
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
    options: BenchOptions, client: ClawClient, cluster: BenchCluster, db: StateDb
) -> dict[str, list[float]]:
    count = options.latency_count
    _progress(f"submit latency: {count} x ClawClient.submit and {count} x the claw submit code path, alternating")
    found = await _submit_latencies(client, count, options.warmup)
    _progress(f"claw submit as a whole process: {options.cli_runs} runs")
    found["cli_process"] = await _cli_process_latency(cluster, options.cli_runs)
    await _wait_idle(db, cluster)
    _progress(f"end-to-end latency: {options.e2e_count} tasks, one in flight")
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


async def _cli_process_latency(cluster: BenchCluster, runs: int) -> list[float]:
    """Whole `claw submit echo` processes (`python -m cli`): interpreter start-up, imports, connect."""
    argv = [sys.executable, "-m", "cli", "--nats", cluster.settings.url, "submit", "echo", "--input", '{"i": 1}']
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


async def _wait_idle(db: StateDb, cluster: BenchCluster, timeout_s: float = 120.0) -> None:
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
    cluster: BenchCluster,
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
    db: StateDb, since: str, target: int, submitting: asyncio.Task[Any], cluster: BenchCluster, *, timeout_s: float
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


if __name__ == "__main__":
    sys.exit(main())
