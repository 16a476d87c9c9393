#!/usr/bin/env python3
"""What `sync_interval: always` costs: `python scripts/bench_sync.py [--tasks N] [--rounds R] [--json FILE]`.

Two embedded nats-servers in one run, on the same disk: one with nats-server's default JetStream
sync interval (fsync every 2 min) and one with `jetstream.sync_interval: always` (fsync of each
write before its ack; what `claw up --sync-interval always` starts). On each, alternating (A/B/A/B,
`--rounds` times, so the machine's load falls on both alike):

- raw JetStream publishes to a file stream: awaited one at a time, and 500 in flight (gather);
- the cluster: a coordinator and one worker as processes (as `claw up` starts them), `--tasks`
  echo tasks submitted and waited for.

Prints each run's figures and the ratio of the medians (always / default).
docs/Performance.md and docs/Reliability.md ("Durability") report the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import nats
import psutil
from nats.js import api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.bench.measure import progress, throughput_only
from cli.bench.script import add_json_option, run_and_emit, scratch_dir
from cli.cluster import ClusterProcesses
from cli.processes import Launcher, child_env
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions

MODES = {"default": None, "always": "always"}
IN_FLIGHT = 500


async def _publishes(url: str, stream: str, count: int) -> dict[str, float]:
    """Publishes per second to a fresh file stream: awaited one at a time, then IN_FLIGHT at once."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{stream}.>"], storage=api.StorageType.FILE))
        payload = b"x" * 256
        started = time.perf_counter()
        for i in range(count):
            await js.publish(f"{stream}.one", payload, headers={"Nats-Msg-Id": f"one-{i}"})
        sequential = count / (time.perf_counter() - started)
        started = time.perf_counter()
        for first in range(0, count, IN_FLIGHT):
            batch = range(first, min(first + IN_FLIGHT, count))
            await asyncio.gather(
                *(js.publish(f"{stream}.many", payload, headers={"Nats-Msg-Id": f"many-{i}"}) for i in batch)
            )
        pipelined = count / (time.perf_counter() - started)
        await js.delete_stream(stream)
        return {"sequential": sequential, "pipelined": pipelined}
    finally:
        await nc.close()


def _cluster(
    launcher: Launcher, nats_server: EmbeddedNatsServer, root: Path, prefix: str, tasks: int
) -> ClusterProcesses:
    env = child_env(
        CLAW_TOOLS_SANDBOX_ROOT=str(root / "sandboxes"),
        CLAW_ARTIFACTS_LOCAL_DIR=str(root / "artifacts"),
        CLAW_WORKER_SKILL_CACHE_DIR=str(root / "skill-cache"),
        CLAW_LOG_LEVEL="warning",
        CLAW_COORDINATOR_MAX_QUEUED_PER_SKILL=str(tasks + 10_000),
    )
    return ClusterProcesses(
        launcher, root, nats_url=nats_server.client_url, monitor_url=nats_server.monitor_url, prefix=prefix,
        workers=1, concurrency=16, node_id=lambda i: "bench-w1", env=env,
    )  # fmt: skip


async def _run(tasks: int, publishes: int, rounds: int, workdir: Path) -> dict[str, Any]:
    launcher = Launcher(log_dir=workdir / "logs")
    servers = {
        mode: await launcher.start_nats(
            NatsServerOptions(store_dir=workdir / f"nats-{mode}", port=0, http_port=0, sync_interval=sync)
        )
        for mode, sync in MODES.items()
    }
    figures: dict[str, dict[str, list[float]]] = {
        mode: {"tasks_per_s": [], "publish_sequential_per_s": [], "publish_pipelined_per_s": []} for mode in MODES
    }
    try:
        for round_ in range(1, rounds + 1):
            for mode, server in servers.items():
                assert server.pid is not None
                rates = await _publishes(server.client_url, f"BENCH_{mode.upper()}_{round_}", publishes)
                figures[mode]["publish_sequential_per_s"].append(rates["sequential"])
                figures[mode]["publish_pipelined_per_s"].append(rates["pipelined"])
                prefix = f"bench_sync_{mode}_{round_}"
                cluster = _cluster(launcher, server, workdir / f"{mode}-{round_}", prefix, tasks)
                cluster.start()
                try:
                    await cluster.wait_ready()
                    run = await throughput_only(tasks, cluster, psutil.Process(server.pid))
                finally:
                    await cluster.stop()
                figures[mode]["tasks_per_s"].append(run.throughput["tps"])
                progress(
                    f"round {round_} {mode}: publish {rates['sequential']:,.0f}/s one at a time, "
                    f"{rates['pipelined']:,.0f}/s {IN_FLIGHT} in flight; cluster {run.throughput['tps']:,.0f} tasks/s"
                )
    finally:
        await launcher.stop_all_async()
    medians = {mode: {k: statistics.median(v) for k, v in values.items()} for mode, values in figures.items()}
    return {
        "tasks": tasks,
        "publishes": publishes,
        "rounds": rounds,
        "runs": figures,
        "median": medians,
        "ratio_always_over_default": {k: medians["always"][k] / medians["default"][k] for k in medians["default"]},
    }


def main() -> int:
    """Run the benchmark and print (and optionally write) its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="echo tasks per cluster run [default: 2000]")
    parser.add_argument("--publishes", type=int, default=3000, help="raw publishes per kind [default: 3000]")
    parser.add_argument("--rounds", type=int, default=2, help="default/always pairs [default: 2]")
    add_json_option(parser)
    args = parser.parse_args()
    with scratch_dir("claw-bench-sync-") as workdir:
        return run_and_emit(_run(args.tasks, args.publishes, args.rounds, workdir), json_path=args.json_path)


if __name__ == "__main__":
    sys.exit(main())
