"""The benchmark's own arithmetic and options: percentiles, the profile summary, the command line."""

from __future__ import annotations

import pytest

from cli.bench.options import DEFAULT_N, QUICK, parse_args
from cli.bench.profile import summarise
from cli.bench.report import percentiles_ms


def test_percentiles_are_in_milliseconds_and_ordered() -> None:
    samples_s = [i / 1000 for i in range(1, 101)]  # 1 .. 100 ms
    p = percentiles_ms(samples_s)
    assert p["p50"] == pytest.approx(50.5)
    assert p["p95"] == pytest.approx(95.05)
    assert p["p99"] == pytest.approx(99.01)
    assert p["max"] == 100.0 and p["count"] == 100


def test_quick_shrinks_every_count_and_n_still_overrides_it() -> None:
    assert parse_args([]).n == DEFAULT_N
    quick = parse_args(["--quick"])
    assert quick.quick and quick.n == QUICK["n"] and quick.latency_count == QUICK["latency_count"]
    assert parse_args(["--quick", "--n", "77"]).n == 77


def test_trace_sample_ratio_defaults_to_every_task_and_is_checked() -> None:
    assert parse_args([]).trace_sample_ratio == 1.0
    assert parse_args(["--tracing", "--trace-sample-ratio", "0.1"]).trace_sample_ratio == 0.1
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(SystemExit):
            parse_args(["--trace-sample-ratio", bad])


def test_worker_counts_are_parsed_sorted_and_checked() -> None:
    assert parse_args(["--workers", "2,1,2"]).workers == (1, 2)
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--workers", "one"])


def test_profile_summary_ranks_functions_by_own_and_inclusive_time() -> None:
    collapsed = "\n".join(
        [
            "run (loop.py:10);fold (folding.py:20);encode (codec.py:5) 30",
            "run (loop.py:10);fold (folding.py:21) 10",
            "run (loop.py:10);commit (db.py:7) 60",
        ]
    )
    summary = summarise(collapsed)
    own, inclusive = summary.split("inclusive time")
    assert own.index("commit (db.py)") < own.index("encode (codec.py)") < own.index("fold (folding.py)")
    assert "60.0 %  commit (db.py)" in own
    assert "100.0 %  run (loop.py)" in inclusive and "40.0 %  fold (folding.py)" in inclusive
