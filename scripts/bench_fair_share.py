"""What tenants' fair share costs: end-to-end throughput with `tenants.fair_share` off and on.

One run, one nats-server, fresh clusters of real processes (the launcher and measurement of
`claw bench`), alternating off / on `--rounds` times; every task of one tenant submitted at once, so
with fair share on all but the first `dispatch_ahead` tasks go through the coordinator's dispatcher
(the worst case). Prints the median throughput of each and the ratio on / off.

    python scripts/bench_fair_share.py --n 5000 --rounds 3 [--dispatch-ahead 64] [--json FILE]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.bench.measure import throughput_only
from cli.bench.options import BenchOptions
from cli.bench.run import Bench, _start
from cli.bench.script import add_json_option, run_and_emit
from cli.processes import Launcher, child_env
from communication.nats_server import NatsServerOptions


async def measure(args: argparse.Namespace) -> dict[str, object]:
    """Alternate clusters with fair share off and on; returns the throughputs and their ratio."""
    workdir = Path(tempfile.mkdtemp(prefix="claw-bench-fair-"))
    launcher = Launcher(log_dir=workdir / "logs", env=child_env(), cwd=workdir)
    tps: dict[str, list[float]] = {"off": [], "on": []}
    try:
        nats = await launcher.start_nats(NatsServerOptions(store_dir=workdir / "nats", port=0, http_port=0))
        assert nats.pid is not None
        options = BenchOptions(n=args.n, workers=(args.workers,), concurrency=args.concurrency)
        run = Bench(options, workdir, launcher, nats, psutil.Process(nats.pid))
        for round_ in range(args.rounds):
            for mode in ("off", "on"):
                env = {"CLAW_TENANTS_FAIR_SHARE": "true" if mode == "on" else "false"}
                env["CLAW_TENANTS_DISPATCH_AHEAD"] = str(args.dispatch_ahead)
                cluster = run.cluster(f"fair-{mode}-{round_}", f"fair_{mode}_{round_}", args.workers, extra_env=env)
                try:
                    await _start(cluster)
                    measured = await throughput_only(args.n, cluster, run.nats_process)
                finally:
                    await cluster.stop()
                tps[mode].append(float(measured.throughput["tps"]))
                print(f"round {round_ + 1} fair_share {mode}: {tps[mode][-1]:,.0f} tasks/s", file=sys.stderr)
    finally:
        await launcher.stop_all_async()
        shutil.rmtree(workdir, ignore_errors=True)
    off, on = statistics.median(tps["off"]), statistics.median(tps["on"])
    return {
        "n": args.n,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "dispatch_ahead": args.dispatch_ahead,
        "rounds": args.rounds,
        "tps_off": tps["off"],
        "tps_on": tps["on"],
        "median_off": round(off),
        "median_on": round(on),
        "ratio_on_off": round(on / off, 3),
    }


def summary(figures: dict[str, Any]) -> str:
    """The one line this script prints."""
    return (
        f"fair share off {figures['median_off']:,} tasks/s, on {figures['median_on']:,} tasks/s "
        f"(median of {figures['rounds']}): on / off = {figures['ratio_on_off']}"
    )


def main() -> int:
    """Parse the options, measure, print (and write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="tasks per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--dispatch-ahead", type=int, default=64, help="tenants.dispatch_ahead when on")
    add_json_option(parser)
    args = parser.parse_args()
    return run_and_emit(measure(args), render=summary, json_path=args.json_path)


if __name__ == "__main__":
    sys.exit(main())
