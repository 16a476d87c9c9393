#!/usr/bin/env python3
"""The cost of authentication on the bus: `python scripts/bench_auth.py [--tasks N] [--rounds R] [--json FILE]`.

Two embedded nats-servers in one run, one open and one with NKey authentication and the per-role
permissions `claw up` uses (docs/Security.md). On each, a coordinator and one worker as processes
(the way `claw up` starts them, with their credentials on the authenticated one), `--tasks` echo
tasks submitted and waited for; open and authenticated alternate (A/B/A/B, `--rounds` times) so the
machine's load falls on both alike. Prints each run's throughput and the ratio of the medians
(authenticated / open). docs/Security.md ("What authentication costs") reports the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.bench.measure import progress, throughput_only
from cli.bench.script import add_json_option, run_and_emit, scratch_dir
from cli.cluster import ClusterProcesses
from cli.credentials import ADMIN_CREDS, LOCAL_ADMIN_ROLES, ensure, prepare_server
from cli.processes import Launcher, child_env
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions

NODE = "bench-w1"


def _issue(auth_dir: Path, prefix: str) -> None:
    """The credentials `claw up` issues: the coordinator's, the worker's, an admin's."""
    prepare_server(auth_dir)
    ensure(auth_dir, name="coordinator", roles=["coordinator"], prefix=prefix)
    ensure(auth_dir, name=NODE, roles=["worker"], node_id=NODE, prefix=prefix)
    ensure(auth_dir, name="bench", roles=LOCAL_ADMIN_ROLES, prefix=prefix, file=ADMIN_CREDS)
    prepare_server(auth_dir)


def _cluster(launcher: Launcher, nats: EmbeddedNatsServer, root: Path, prefix: str, tasks: int,
             auth_dir: Path | None) -> ClusterProcesses:  # fmt: skip
    env = child_env(
        CLAW_TOOLS_SANDBOX_ROOT=str(root / "sandboxes"),
        CLAW_ARTIFACTS_LOCAL_DIR=str(root / "artifacts"),
        CLAW_WORKER_SKILL_CACHE_DIR=str(root / "skill-cache"),
        CLAW_LOG_LEVEL="warning",
        CLAW_COORDINATOR_MAX_QUEUED_PER_SKILL=str(tasks + 10_000),
        **({} if auth_dir is None else {"CLAW_AUTH_DIR": str(auth_dir)}),
    )

    def creds(child: str) -> str | None:
        if auth_dir is None:
            return None
        return str(auth_dir / ("coordinator.creds" if child == "coordinator" else f"{NODE}.creds"))

    return ClusterProcesses(
        launcher, root, nats_url=nats.client_url, monitor_url=nats.monitor_url, prefix=prefix, workers=1,
        concurrency=16, node_id=lambda i: NODE, env=env, creds=creds,
        client_creds=None if auth_dir is None else str(auth_dir / ADMIN_CREDS),
    )  # fmt: skip


async def _run(tasks: int, rounds: int, workdir: Path) -> dict[str, Any]:
    launcher = Launcher(log_dir=workdir / "logs")
    auth_dir = workdir / "auth"
    await asyncio.to_thread(_issue, auth_dir, "bench_auth")
    servers = {
        "open": await launcher.start_nats(NatsServerOptions(store_dir=workdir / "nats-open", port=0, http_port=0)),
        "auth": await launcher.start_nats(
            NatsServerOptions(store_dir=workdir / "nats-auth", port=0, http_port=0, auth_dir=auth_dir)
        ),
    }
    tps: dict[str, list[float]] = {"open": [], "auth": []}
    try:
        for round_ in range(1, rounds + 1):
            for mode, nats in servers.items():
                assert nats.pid is not None
                prefix = "bench_open" if mode == "open" else "bench_auth"
                root = workdir / f"{mode}-{round_}"
                cluster = _cluster(launcher, nats, root, prefix, tasks, auth_dir if mode == "auth" else None)
                cluster.start()
                try:
                    await cluster.wait_ready()
                    run = await throughput_only(tasks, cluster, psutil.Process(nats.pid))
                finally:
                    await cluster.stop()
                tps[mode].append(run.throughput["tps"])
                progress(f"round {round_} {mode}: {run.throughput['tps']:,.0f} tasks/s")
    finally:
        await launcher.stop_all_async()
    medians = {mode: statistics.median(values) for mode, values in tps.items()}
    return {
        "tasks": tasks,
        "rounds": rounds,
        "tps": tps,
        "median_tps": medians,
        "ratio_auth_over_open": medians["auth"] / medians["open"],
    }


def main() -> int:
    """Run the benchmark and print (and optionally write) its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="echo tasks per run [default: 2000]")
    parser.add_argument("--rounds", type=int, default=2, help="open/authenticated pairs [default: 2]")
    add_json_option(parser)
    args = parser.parse_args()
    with scratch_dir("claw-bench-auth-") as workdir:
        return run_and_emit(_run(args.tasks, args.rounds, workdir), json_path=args.json_path)


if __name__ == "__main__":
    sys.exit(main())
