"""One run of `claw bench`: a temporary directory, nats-server, the raw baseline, then a fresh cluster
for each measurement, all started and stopped through the launcher of `claw up` (`cli.processes`,
`cli.cluster`)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psutil

from cli.bench.errors import BenchError
from cli.bench.measure import IDLE_SETTLE_S, measure_cluster, processes_of, progress, throughput_only
from cli.bench.options import BenchOptions
from cli.bench.prefill import prefill_database
from cli.bench.probes import StateDb, rss_bytes
from cli.bench.raw import measure_raw
from cli.bench.report import ClusterRun, PrefilledRun, ReplicationRun, TracingRun, build_report, environment
from cli.cluster import ClusterProcesses
from cli.processes import ROOT, Child, Launcher, child_env
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from storage.audit_anchor import key_path


async def bench(options: BenchOptions) -> dict[str, Any]:
    """Start everything in a temporary directory, measure, and stop everything; returns the report."""
    workdir = Path(tempfile.mkdtemp(prefix="claw-bench-"))
    launcher = Launcher(log_dir=workdir / "logs", env=child_env(), cwd=workdir)
    try:
        return await _bench(options, workdir, launcher)
    finally:
        await launcher.stop_all_async()
        if options.keep:
            progress(f"kept {workdir} (logs in */logs/, databases in cluster-w*/claw.db)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Bench:
    """What every phase of a run shares: its options, directory, launcher and nats-server."""

    options: BenchOptions
    workdir: Path
    launcher: Launcher
    nats: EmbeddedNatsServer
    nats_process: psutil.Process

    def cluster(
        self, folder: str, prefix: str, workers: int, extra_env: dict[str, str] | None = None
    ) -> ClusterProcesses:
        """A coordinator and `workers` workers in `<workdir>/<folder>`, under `prefix`."""
        root = self.workdir / folder
        queue_limit = self.options.n + 10_000
        env = child_env(
            CLAW_TOOLS_SANDBOX_ROOT=str(root / "sandboxes"),
            CLAW_ARTIFACTS_LOCAL_DIR=str(root / "artifacts"),
            CLAW_WORKER_SKILL_CACHE_DIR=str(root / "skill-cache"),
            CLAW_LOG_LEVEL="warning",
            # The throughput run submits all N tasks at once: the admission limits (a protection for
            # real clusters, docs/Reliability.md) are raised above N so that they are not what is measured.
            CLAW_COORDINATOR_MAX_QUEUED_PER_SKILL=str(queue_limit),
            CLAW_JETSTREAM_TASKS_MAX_PER_SUBJECT=str(max(queue_limit, 100_000)),
            **(extra_env or {}),
        )
        return ClusterProcesses(
            self.launcher,
            root,
            nats_url=self.nats.client_url,
            monitor_url=self.nats.monitor_url,
            prefix=prefix,
            workers=workers,
            concurrency=self.options.concurrency,
            node_id=lambda i: f"bench-w{i}",
            env=env,
        )


async def _start(cluster: ClusterProcesses) -> None:
    cluster.start()
    await cluster.wait_ready()


async def _bench(options: BenchOptions, workdir: Path, launcher: Launcher) -> dict[str, Any]:
    started = time.time()
    load_before = os.getloadavg()
    progress(f"starting nats-server in {workdir}")
    nats = await launcher.start_nats(
        NatsServerOptions(
            store_dir=workdir / "nats", port=0, http_port=0, log_file=workdir / "logs" / "nats-server.log"
        )
    )
    assert nats.pid is not None
    run = Bench(options, workdir, launcher, nats, psutil.Process(nats.pid))

    progress(f"raw JetStream baseline: {options.n} tasks, then {options.latency_count} round trips")
    raw = await measure_raw(
        nats.client_url,
        n=options.n,
        latency_count=options.latency_count,
        warmup=options.warmup,
        launcher=launcher,
        watch={"nats": run.nats_process, "client": psutil.Process()},
    )
    progress(f"raw: {raw.throughput_tps:,.0f} tasks/s")

    runs: list[ClusterRun] = []
    for workers in options.workers:
        cluster = run.cluster(f"cluster-w{workers}", f"bench_w{workers}", workers)
        progress(f"cluster with {workers} worker(s) (concurrency {options.concurrency}): starting")
        try:
            await _start(cluster)
            runs.append(await measure_cluster(options, cluster, run.nats_process, launcher))
        finally:
            await cluster.stop()
    baseline = next(r for r in runs if r.workers == options.latency_workers)
    tracing = await _measure_tracing(run, baseline) if options.tracing else None
    prefilled = await _measure_prefilled(run, baseline) if options.prefill else None
    replication = await _measure_replication(run, baseline) if options.replication else None
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
    return build_report(meta, raw=raw, runs=runs, tracing=tracing, prefilled=prefilled, replication=replication)


async def _measure_prefilled(run: Bench, baseline: ClusterRun) -> PrefilledRun:
    """The throughput again, on a cluster whose database already holds `--prefill` finished tasks."""
    options = run.options
    workers = options.latency_workers
    cluster = run.cluster("cluster-prefilled", "bench_prefilled", workers)
    cluster.root.mkdir(parents=True, exist_ok=True)
    progress(f"prefill: writing {options.prefill:,} finished tasks into a fresh database")
    fill_s = await prefill_database(
        cluster.db_path, options.prefill, progress=lambda done: progress(f"prefill: {done:,} tasks")
    )
    progress(f"prefill: {options.n} echo tasks with {workers} worker(s) on the filled database")
    try:
        start = time.perf_counter()
        await _start(cluster)
        ready_s = time.perf_counter() - start
        await asyncio.sleep(IDLE_SETTLE_S)
        idle_rss = rss_bytes(processes_of(cluster)["coordinator"])
        measured = await throughput_only(options.n, cluster, run.nats_process)
        measured.idle_rss = {"coordinator": idle_rss}
    finally:
        await cluster.stop()
    db_bytes, wal_bytes = await asyncio.to_thread(StateDb(cluster.db_path).file_sizes)
    progress(f"prefill: {measured.throughput['tps']:,.0f} tasks/s with {options.prefill:,} stored")
    return PrefilledRun(
        run=measured,
        baseline=baseline,
        stored=options.prefill,
        fill_s=fill_s,
        ready_s=ready_s,
        db_bytes=db_bytes + wal_bytes,
    )


async def _measure_replication(run: Bench, baseline: ClusterRun) -> ReplicationRun:
    """The throughput again, with the coordinator shipping every commit and a standby following."""
    options = run.options
    workers = options.latency_workers
    cluster = run.cluster(
        "cluster-replicated", "bench_replicated", workers, extra_env={"CLAW_COORDINATOR_REPLICATION": "true"}
    )
    standby_db = cluster.root / "standby" / "claw.db"
    progress(f"replication: {options.n} echo tasks with {workers} worker(s), every commit shipped to a standby")
    standby: Child | None = None
    try:
        await _start(cluster)
        await asyncio.to_thread(_share_key, cluster.db_path, standby_db)
        standby = run.launcher.claw(
            "standby", "coordinator", "start", "--db", str(standby_db), env=cluster.env | {"CLAW_LOG_LEVEL": "info"},
            log_path=cluster.logs / "standby.log", stop_timeout_s=30,
        )  # fmt: skip
        await _logged(standby, "coordinator.standby")
        before = await asyncio.to_thread(_commit_no, cluster.db_path)
        measured = await throughput_only(options.n, cluster, run.nats_process)
        active_now = await asyncio.to_thread(_commit_no, cluster.db_path)
        lag = active_now - await asyncio.to_thread(_commit_no, standby_db)
        caught_up_s = await _caught_up(standby_db, active_now)
    finally:
        if standby is not None:
            await asyncio.to_thread(standby.stop)
        await cluster.stop()
    progress(f"replication: {measured.throughput['tps']:,.0f} tasks/s, standby {lag} commits behind at the end")
    return ReplicationRun(
        run=measured, baseline=baseline, commits=active_now - before, standby_lag_commits=lag,
        standby_caught_up_s=caught_up_s,
    )  # fmt: skip


def _share_key(active_db: Path, standby_db: Path) -> None:
    """Give the standby the active coordinator's key (what signs the replicated commits)."""
    target = key_path(standby_db)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy2(key_path(active_db), target)


def _commit_no(db: Path) -> int:
    """The replication commit number of a database (0 before its first)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT commit_no FROM replication").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


async def _caught_up(db: Path, target: int, timeout_s: float = 60.0) -> float | None:
    """Seconds until the standby's copy holds commit `target` (None: not within `timeout_s`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if await asyncio.to_thread(_commit_no, db) >= target:
            return round(time.monotonic() - start, 2)
        await asyncio.sleep(0.1)
    return None


async def _logged(child: Child, text: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in await asyncio.to_thread(child.output):
        if not child.alive:
            raise BenchError(f"{child.name} exited with code {child.returncode}; see {child.log_path}")
        if time.monotonic() > deadline:
            raise BenchError(f"{child.name} did not log {text} within {timeout_s:g} s; see {child.log_path}")
        await asyncio.sleep(0.1)


async def _measure_tracing(run: Bench, baseline: ClusterRun) -> TracingRun:
    """The throughput again, on a fresh cluster whose processes record and export every span."""
    options = run.options
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
        raise BenchError("--tracing needs the OTLP exporter: pip install 'openclaw-cluster[otel]'")
    port_file = run.workdir / "span-sink.port"
    sink = run.launcher.spawn("span-sink", [sys.executable, "-m", "cli.bench.span_sink", str(port_file)])
    try:
        endpoint = f"http://127.0.0.1:{await _port_from(port_file, sink)}"
        workers = options.latency_workers
        traced = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "CLAW_TRACING_SAMPLE_RATIO": str(options.trace_sample_ratio),
            # The processes export most of their spans as they exit, all at once; on a loaded machine
            # the sink may take longer than the default 10 s to answer, and a batch not answered in
            # time is dropped: that would measure the sink, not the cluster.
            "OTEL_EXPORTER_OTLP_TIMEOUT": "60",
        }
        cluster = run.cluster("cluster-traced", "bench_traced", workers, extra_env=traced)
        progress(
            f"tracing: {options.n} echo tasks with {workers} worker(s), spans of {options.trace_sample_ratio:.0%}"
            " of them exported over OTLP"
        )
        try:
            await _start(cluster)
            measured = await throughput_only(options.n, cluster, run.nats_process)
        finally:
            await cluster.stop()  # the processes flush their last spans as they exit
        counts = await asyncio.to_thread(_sink_counts, endpoint)
        sampled = await asyncio.to_thread(_sampled_tasks, cluster.db_path)
        spans = int(counts["spans"])
        progress(
            f"tracing: {measured.throughput['tps']:,.0f} tasks/s, {spans:,} spans exported ({sampled:,} tasks sampled)"
        )
        return TracingRun(
            run=measured,
            baseline=baseline,
            spans=spans,
            sample_ratio=options.trace_sample_ratio,
            sampled_tasks=sampled,
            spans_by_process=dict(counts["by_process"]),
        )
    finally:
        await asyncio.to_thread(sink.stop)


async def _port_from(port_file: Path, process: Child, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process.alive:
            raise BenchError(f"the span sink exited with code {process.returncode}; see {process.log_path}")
        text = await asyncio.to_thread(lambda: port_file.read_text() if port_file.exists() else "")
        if text.strip():
            return int(text)
        await asyncio.sleep(0.05)
    raise BenchError(f"the span sink did not start within {timeout_s:g} s")


def _sink_counts(endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{endpoint}/count", timeout=10) as reply:  # noqa: S310 - our loopback sink
        return cast(dict[str, Any], json.load(reply))


def _sampled_tasks(db_path: Path) -> int:
    """How many tasks of the run were sampled: the flags of the traceparent each task keeps say it
    (W3C: bit 0 of the last field). What the sink received is checked against this, not against
    the ratio, whose draw varies by +-16 tasks in 1,000."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT traceparent FROM tasks WHERE traceparent IS NOT NULL").fetchall()
    return sum(1 for (traceparent,) in rows if int(traceparent.rsplit("-", 1)[-1], 16) & 1)
