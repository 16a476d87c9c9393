"""The command line of `claw bench` and `scripts/bench.py` (one parser for both)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.bench.script import add_json_option

DEFAULT_N = 50_000
DEFAULT_CONCURRENCY = 64
QUICK = {"n": 1000, "latency_count": 30, "e2e_count": 20, "cli_runs": 2, "warmup": 5}


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
    replication: bool = False
    latency_count: int = 1000
    e2e_count: int = 400
    cli_runs: int = 10
    warmup: int = 50

    @property
    def latency_workers(self) -> int:
        """The latencies are measured on the cluster with the most workers."""
        return max(self.workers)


def parse_args(argv: Sequence[str] | None = None, prog: str = "claw bench") -> BenchOptions:
    """The options of one run, from the command line (argparse exits 2 on a bad one)."""
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
        replication=args.replication,
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
    add_json_option(parser)
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
    parser.add_argument(
        "--replication",
        action="store_true",
        help="also run the throughput with the coordinator replicating every commit to a standby, and report the cost",
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
