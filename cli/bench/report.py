"""The report of `claw bench`: what was measured, as JSON (`build_report`) and as a table for people.

The JSON keeps every figure that docs/Performance.md quotes: `raw`, `cluster` (throughput per worker
count, latencies, RSS, CPU per 1,000 tasks, SQLite size), `ratio`, the `targets` of the speed work
with whether each is met, and `meta` (date, commit, versions, machine, options).
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from cli.bench.raw import RawResult

MB = 1_000_000

# The targets of the speed work: (figure, path in the report, comparison, bound).
TARGETS: list[tuple[str, tuple[str, ...], str, float]] = [
    ("e2e throughput, 2 workers (tasks/s)", ("cluster", "throughput_tps", "2"), ">=", 5000.0),
    ("cluster / raw throughput", ("ratio", "throughput"), ">=", 0.30),
    ("submit latency p50 (ms)", ("cluster", "submit_latency_ms", "p50"), "<=", 1.5),
    ("submit latency p99 (ms)", ("cluster", "submit_latency_ms", "p99"), "<=", 5.0),
    ("e2e latency p50 (ms)", ("cluster", "e2e_latency_ms", "p50"), "<=", 4.0),
    ("e2e latency p99 (ms)", ("cluster", "e2e_latency_ms", "p99"), "<=", 10.0),
    ("idle worker RSS (MB)", ("cluster", "rss_mb", "idle_worker"), "<=", 60.0),
    ("coordinator RSS, 1M tasks stored (MB)", ("prefilled", "coordinator_peak_rss_mb"), "<=", 150.0),
    ("throughput 1M stored / empty", ("prefilled", "ratio"), ">=", 0.80),
]
MILLION = 1_000_000


@dataclass
class ClusterRun:
    """What one cluster (one worker count) measured; sizes in bytes, times in seconds."""

    workers: int
    throughput: dict[str, Any] = field(default_factory=dict)
    idle_rss: dict[str, int] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    sqlite: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    profile: dict[str, str] = field(default_factory=dict)

    def worker_max(self, rss: dict[str, int]) -> float:
        """The largest RSS among this run's workers, in MB."""
        return max(v for k, v in rss.items() if k.startswith("worker")) / MB


@dataclass
class TracingRun:
    """The throughput run with every span exported, and the untraced run it is compared with."""

    run: ClusterRun
    baseline: ClusterRun
    spans: int
    sample_ratio: float = 1.0
    # Tasks whose traceparent says sampled: each should have all its spans at the sink.
    sampled_tasks: int = 0
    spans_by_process: dict[str, int] = field(default_factory=dict)


@dataclass
class ReplicationRun:
    """The throughput run with every commit shipped to a following standby, and the plain run."""

    run: ClusterRun
    baseline: ClusterRun
    commits: int  # commits the active shipped in the run
    standby_lag_commits: int  # how far behind the standby was when the last task had finished
    standby_caught_up_s: float | None  # how long after that it had applied everything


@dataclass
class PrefilledRun:
    """The throughput run on a database that already held `stored` finished tasks."""

    run: ClusterRun
    baseline: ClusterRun
    stored: int
    fill_s: float
    ready_s: float
    db_bytes: int


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 (and mean, max, count) in milliseconds."""
    ms = [s * 1000 for s in samples_s]
    if len(ms) < 2:
        ms = ms * 2  # quantiles needs two points; only a --quick run has so few
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "p50": round(cuts[49], 3),
        "p95": round(cuts[94], 3),
        "p99": round(cuts[98], 3),
        "mean": round(statistics.fmean(ms), 3),
        "max": round(max(ms), 3),
        "count": len(samples_s),
    }


def build_report(
    meta: dict[str, Any],
    *,
    raw: RawResult,
    runs: list[ClusterRun],
    tracing: TracingRun | None = None,
    prefilled: PrefilledRun | None = None,
    replication: ReplicationRun | None = None,
) -> dict[str, Any]:
    """The JSON document. Costs (CPU, RSS, SQLite) and ratios are those of the 2-worker cluster (else
    the one with the most workers); latencies come from the run that measured them."""
    main = next((r for r in runs if r.workers == 2), runs[-1])
    latency_run = next(r for r in runs if r.latencies)
    raw_tps = raw.throughput_tps
    raw_latency = percentiles_ms(raw.latencies_s)
    e2e = percentiles_ms(latency_run.latencies["e2e"])
    report: dict[str, Any] = {
        "meta": meta | {"costs_from_workers": main.workers, "latencies_from_workers": latency_run.workers},
        "raw": {
            "n": meta["n"],
            "throughput_tps": round(raw_tps, 1),
            "latency_ms": raw_latency,
            "result_path": "core publish to benchraw.results",
            "cpu_s_per_1000": {name: round(s * 1000 / raw.n, 4) for name, s in raw.cpu_s.items()},
            "others_cpu_share": round(raw.others_cpu_share, 3),
        },
        "cluster": {
            "throughput_tps": {str(r.workers): round(r.throughput["tps"], 1) for r in runs},
            "submit_accept_tps": {str(r.workers): round(r.throughput["submit_tps"], 1) for r in runs},
            "submit_latency_ms": percentiles_ms(latency_run.latencies["submit"]),
            "cli_submit_latency_ms": percentiles_ms(latency_run.latencies["cli_submit"]),
            "cli_process_ms": percentiles_ms(latency_run.latencies["cli_process"]),
            "e2e_latency_ms": e2e,
            "rss_mb": {
                "coordinator": round(main.peak_rss["coordinator"] / MB, 1),
                "workers": round(main.worker_max(main.peak_rss), 1),
                "idle_worker": round(main.worker_max(main.idle_rss), 1),
                "idle_coordinator": round(main.idle_rss["coordinator"] / MB, 1),
            },
            "cpu_s_per_1000": _cpu_per_1000(main),
            **_sqlite_per_100k(main.sqlite),
            "runs": {str(r.workers): _run_detail(r) for r in runs},
        },
        "ratio": {
            "throughput": round(main.throughput["tps"] / raw_tps, 4),
            "latency_p50": round(e2e["p50"] / raw_latency["p50"], 2),
        },
    }
    if main.profile:
        report["profile"] = main.profile
    if tracing is not None:
        report["tracing"] = _tracing(tracing)
    if prefilled is not None:
        report["prefilled"] = _prefilled(prefilled)
    if replication is not None:
        report["replication"] = _replication(replication)
    report["targets"] = [_target(report, *target) for target in TARGETS]
    return report


def _cpu_per_1000(run: ClusterRun) -> dict[str, float]:
    cpu_s, per_1000 = run.throughput["cpu_s"], 1000 / run.throughput["n"]
    workers = sum(s for name, s in cpu_s.items() if name.startswith("worker"))
    return {
        "coordinator": round(cpu_s["coordinator"] * per_1000, 4),
        "workers": round(workers * per_1000, 4),
        "nats": round(cpu_s["nats"] * per_1000, 4),
        "bench_client": round(cpu_s["bench"] * per_1000, 4),
    }


def _sqlite_per_100k(sqlite: dict[str, int]) -> dict[str, Any]:
    per_task = 100_000 / sqlite["tasks"]
    return {
        "sqlite_bytes_per_100k": round((sqlite["db_bytes"] + sqlite["wal_bytes"]) * per_task),
        "sqlite_db_bytes_per_100k": round(sqlite["db_bytes"] * per_task),
        "sqlite": sqlite,
    }


def _run_detail(run: ClusterRun) -> dict[str, Any]:
    t = run.throughput
    return {
        "throughput_tps": round(t["tps"], 1),
        "elapsed_s": round(t["elapsed_s"], 3),
        "submit_s": round(t["submit_s"], 3),
        "others_cpu_share": round(t["others_cpu_share"], 3),
        "cpu_s": {name: round(s, 3) for name, s in t["cpu_s"].items()},
        "peak_rss_mb": {name: round(b / MB, 1) for name, b in run.peak_rss.items()},
        "idle_rss_mb": {name: round(b / MB, 1) for name, b in run.idle_rss.items()},
        "sqlite": run.sqlite,
    }


def _tracing(tracing: TracingRun) -> dict[str, Any]:
    traced, baseline = tracing.run, tracing.baseline
    n = traced.throughput["n"]
    return {
        "exporter": "otlp",
        "sample_ratio": tracing.sample_ratio,
        "workers": traced.workers,
        "throughput_tps": round(traced.throughput["tps"], 1),
        "untraced_throughput_tps": round(baseline.throughput["tps"], 1),
        "ratio": round(traced.throughput["tps"] / baseline.throughput["tps"], 4),
        "cpu_s_per_1000": _cpu_per_1000(traced),
        "untraced_cpu_s_per_1000": _cpu_per_1000(baseline),
        "spans_exported": tracing.spans,
        "sampled_tasks": tracing.sampled_tasks,
        "spans_by_process": tracing.spans_by_process,
        "spans_per_task": round(tracing.spans / n, 2),
        "peak_rss_mb": {name: round(b / MB, 1) for name, b in traced.peak_rss.items()},
    }


def _replication(replication: ReplicationRun) -> dict[str, Any]:
    on, off = replication.run, replication.baseline
    return {
        "workers": on.workers,
        "throughput_tps": round(on.throughput["tps"], 1),
        "plain_throughput_tps": round(off.throughput["tps"], 1),
        "ratio": round(on.throughput["tps"] / off.throughput["tps"], 4),
        "submit_accept_tps": round(on.throughput["submit_tps"], 1),
        "plain_submit_accept_tps": round(off.throughput["submit_tps"], 1),
        "submit_ratio": round(on.throughput["submit_tps"] / off.throughput["submit_tps"], 4),
        "commits_shipped": replication.commits,
        "standby_lag_commits_at_end": replication.standby_lag_commits,
        "standby_caught_up_s": replication.standby_caught_up_s,
        "cpu_s_per_1000": _cpu_per_1000(on),
        "plain_cpu_s_per_1000": _cpu_per_1000(off),
    }


def _prefilled(prefilled: PrefilledRun) -> dict[str, Any]:
    run, baseline = prefilled.run, prefilled.baseline
    # The targets speak of a database of a million tasks: a smaller prefill is reported, not judged.
    judged = prefilled.stored >= MILLION
    return {
        "stored_tasks": prefilled.stored,
        "fill_s": round(prefilled.fill_s, 1),
        "db_mb": round(prefilled.db_bytes / MB, 1),
        "coordinator_ready_s": round(prefilled.ready_s, 2),
        "workers": run.workers,
        "throughput_tps": round(run.throughput["tps"], 1),
        "empty_throughput_tps": round(baseline.throughput["tps"], 1),
        "ratio": round(run.throughput["tps"] / baseline.throughput["tps"], 4) if judged else None,
        "coordinator_idle_rss_mb": round(run.idle_rss["coordinator"] / MB, 1),
        "coordinator_peak_rss_mb": round(run.peak_rss["coordinator"] / MB, 1) if judged else None,
        "coordinator_peak_rss_mb_measured": round(run.peak_rss["coordinator"] / MB, 1),
        "cpu_s_per_1000": _cpu_per_1000(run),
    }


def _target(report: dict[str, Any], name: str, path: tuple[str, ...], op: str, bound: float) -> dict[str, Any]:
    value: Any = report
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    met = None if value is None else bool(value >= bound if op == ">=" else value <= bound)
    return {"figure": name, "value": value, "target": f"{op} {bound:g}", "met": met}


# --- meta -----------------------------------------------------------------------------------------


def environment(started: float, nats_server_binary: str, repo: Path) -> dict[str, Any]:
    """Where and on what the figures were measured."""
    return {
        "date": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": _git(repo, "rev-parse", "HEAD"),
        "git_dirty": bool(_git(repo, "status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "nats_server": _nats_server_version(nats_server_binary),
        "nats_py": metadata.version("nats-py"),
        "event_loop": _loop_name(),
        "cpu_count": os.cpu_count(),
    }


def _git(repo: Path, *args: str) -> str:
    git = shutil.which("git")
    if git is None:
        return ""
    try:
        out = subprocess.run([git, *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _nats_server_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip().removeprefix("nats-server: ").removeprefix("v")


def _loop_name() -> str:
    try:
        return f"uvloop {metadata.version('uvloop')}"
    except metadata.PackageNotFoundError:
        return "asyncio"


# --- the table ------------------------------------------------------------------------------------


def render_table(report: dict[str, Any]) -> str:
    """The figures for people: the raw baseline, the cluster, the ratios, the targets."""
    lines = _header(report["meta"]) + _raw_lines(report["raw"]) + _cluster_lines(report)
    if "tracing" in report:
        lines += _tracing_lines(report["tracing"])
    if "prefilled" in report:
        lines += _prefilled_lines(report["prefilled"])
    if "replication" in report:
        lines += _replication_lines(report["replication"])
    ratio = report["ratio"]
    lines += [
        "",
        "ratios",
        _row("throughput cluster / raw", f"{ratio['throughput']:.3f}"),
        _row("latency p50 e2e / raw round trip", f"{ratio['latency_p50']:.1f}x"),
        "",
        "targets of the speed work",
    ]
    for target in report["targets"]:
        value = target["value"]
        shown = "-" if value is None else f"{value:,.3g}" if value < 10 else f"{value:,.0f}"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        lines.append(_row(target["figure"], f"{shown:>8}  target {target['target']:<8}  {verdict}"))
    return "\n".join(lines)


def _header(meta: dict[str, Any]) -> list[str]:
    commit = meta["git_commit"][:7] + ("+dirty" if meta["git_dirty"] else "")
    quick = "  (QUICK: a smoke test of the benchmark, not figures)" if meta["quick"] else ""
    return [
        f"claw bench  {meta['date']}  commit {commit}  Python {meta['python']}  nats-server {meta['nats_server']}"
        f"  {meta['event_loop']}  {meta['cpu_count']} CPUs  load {meta['load_avg_before'][0]:.2f}",
        f"N = {meta['n']:,} tasks per throughput run; workers {meta['workers']} "
        f"at --concurrency {meta['worker_concurrency']}{quick}",
        "",
    ]


def _raw_lines(raw: dict[str, Any]) -> list[str]:
    return [
        "raw JetStream (publish_async -> 2nd process fetch(256) + ack -> core reply)",
        _row(
            "throughput",
            f"{raw['throughput_tps']:,.0f} tasks/s  (other processes used {raw['others_cpu_share']:.0%} of the CPUs)",
        ),
        _row("round trip, one in flight", _pcts(raw["latency_ms"])),
        _row("CPU s per 1,000 tasks", "  ".join(f"{k} {v:.3f}" for k, v in raw["cpu_s_per_1000"].items())),
        "",
    ]


def _cluster_lines(report: dict[str, Any]) -> list[str]:
    cluster, meta = report["cluster"], report["meta"]
    lines = ["cluster (coordinator + workers as processes, same nats-server)"]
    for workers, tps in cluster["throughput_tps"].items():
        accepted = f"submits accepted at {cluster['submit_accept_tps'][workers]:,.0f}/s"
        others = f"other processes used {cluster['runs'][workers]['others_cpu_share']:.0%} of the CPUs"
        lines.append(_row(f"throughput, {workers} worker(s)", f"{tps:,.0f} tasks/s  ({accepted}; {others})"))
    lines += [
        _row("submit latency, ClawClient.submit", _pcts(cluster["submit_latency_ms"])),
        _row("submit latency, claw submit code path", _pcts(cluster["cli_submit_latency_ms"])),
        _row("claw submit process (start-up bound)", f"p50 {cluster['cli_process_ms']['p50']:,.0f} ms"),
        _row("end to end, one in flight", _pcts(cluster["e2e_latency_ms"])),
    ]
    cpu, rss = cluster["cpu_s_per_1000"], cluster["rss_mb"]
    wal_mb = cluster["sqlite"]["wal_bytes"] / MB
    lines += [
        f"  costs, from the {meta['costs_from_workers']}-worker throughput run:",
        _row("CPU s per 1,000 tasks", "  ".join(f"{k} {v:.3f}" for k, v in cpu.items())),
        _row(
            "RSS MB",
            f"coordinator peak {rss['coordinator']:.0f}  worker peak {rss['workers']:.0f}  "
            f"idle worker {rss['idle_worker']:.0f}  idle coordinator {rss['idle_coordinator']:.0f}",
        ),
        # The write-ahead log is reused from its start after each checkpoint that caught up: its
        # size is a high-water mark of the load, not a cost per task.
        _row(
            "SQLite per 100,000 tasks",
            f"{cluster['sqlite_db_bytes_per_100k'] / MB:,.1f} MB db  (plus a write-ahead log of {wal_mb:,.1f} MB)",
        ),
    ]
    return lines


def _tracing_lines(tracing: dict[str, Any]) -> list[str]:
    def cpu(per_1000: dict[str, float]) -> str:
        return f"coordinator {per_1000['coordinator']:.3f}  workers {per_1000['workers']:.3f}"

    return [
        "",
        f"tracing: spans of {tracing['sample_ratio']:.0%} of the tasks exported over OTLP,"
        f" {tracing['workers']} worker(s)",
        _row(
            "throughput traced / untraced",
            f"{tracing['throughput_tps']:,.0f} / {tracing['untraced_throughput_tps']:,.0f} tasks/s"
            f" = {tracing['ratio']:.3f}",
        ),
        _row("CPU s per 1,000 tasks traced", cpu(tracing["cpu_s_per_1000"])),
        _row("CPU s per 1,000 tasks untraced", cpu(tracing["untraced_cpu_s_per_1000"])),
        _row(
            "spans exported",
            f"{tracing['spans_exported']:,} ({tracing['spans_per_task']:.2f} per task;"
            f" {tracing['sampled_tasks']:,} tasks sampled)",
        ),
    ]


def _replication_lines(rep: dict[str, Any]) -> list[str]:
    caught = rep["standby_caught_up_s"]
    return [
        "",
        f"replication: every commit shipped to <PREFIX>_REPL, one standby following, {rep['workers']} worker(s)",
        _row(
            "throughput replicated / plain",
            f"{rep['throughput_tps']:,.0f} / {rep['plain_throughput_tps']:,.0f} tasks/s = {rep['ratio']:.3f}",
        ),
        _row(
            "submit accept replicated / plain",
            f"{rep['submit_accept_tps']:,.0f} / {rep['plain_submit_accept_tps']:,.0f} tasks/s"
            f" = {rep['submit_ratio']:.3f}",
        ),
        _row("commits shipped", f"{rep['commits_shipped']:,}"),
        _row(
            "standby behind at the end",
            f"{rep['standby_lag_commits_at_end']:,} commits"
            + ("" if caught is None else f", caught up {caught:.1f} s later"),
        ),
    ]


def _prefilled_lines(prefilled: dict[str, Any]) -> list[str]:
    tps, empty = prefilled["throughput_tps"], prefilled["empty_throughput_tps"]
    return [
        "",
        f"on a database already holding {prefilled['stored_tasks']:,} finished tasks "
        f"({prefilled['db_mb']:,.0f} MB, written in {prefilled['fill_s']:.0f} s), {prefilled['workers']} worker(s)",
        _row("throughput stored / empty", f"{tps:,.0f} / {empty:,.0f} tasks/s = {tps / empty:.3f}"),
        _row(
            "coordinator RSS MB",
            f"idle {prefilled['coordinator_idle_rss_mb']:.0f}  peak {prefilled['coordinator_peak_rss_mb_measured']:.0f}"
            f"  (ready {prefilled['coordinator_ready_s']:.1f} s after start)",
        ),
    ]


def _row(label: str, value: str) -> str:
    return f"  {label:<40} {value}"


def _pcts(p: dict[str, float]) -> str:
    return f"p50 {p['p50']:.2f} ms  p95 {p['p95']:.2f} ms  p99 {p['p99']:.2f} ms"
