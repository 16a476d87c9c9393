#!/usr/bin/env python3
"""Benchmark of the workflow runner: `python scripts/bench_workflows.py [--runs 1000] [--chain 100] [--json F]`.

Starts its own nats-server (temporary store), a coordinator in this process (so the runner's own
dispatch clock can be read) and `--workers` worker processes (`claw worker start`), then measures,
in one run, on this machine:

1. **Dispatch latency**: a node task's outcome committed by the coordinator -> the next node's task
   published (its PubAck received), p50/p99 over every dispatch of phases 2 and 3.
2. **A 100-node chain against 100 plain tasks**: the same 100 `echo` tasks one after the other,
   first as 100 `submit` + wait round trips from a client (the baseline), then as one workflow
   run of 100 chained nodes; the ratio is the chain's overhead (or gain) over the baseline.
3. **1,000 concurrent runs of a 5-node workflow** (a -> (b, c) -> d -> e): all started at once;
   reports how long they took, runs/s, and how many did not finish within the deadline (stuck).

docs/Workflows.md ("Performance") holds the figures measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
import yaml

from cli.bench.script import add_json_option, run_and_emit
from cli.processes import Launcher, child_env
from common import api, verbs
from common.config import LogSettings, load_config
from common.log import configure_logging
from common.models import TaskSpec
from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from coordinator.service import Coordinator


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def chain_spec(length: int) -> str:
    nodes: dict[str, Any] = {"n000": {"skill": "echo", "input": {"i": 0}}}
    for i in range(1, length):
        nodes[f"n{i:03d}"] = {"skill": "echo", "input": {"i": i, "prev": f"=nodes.n{i - 1:03d}.output.i"}}
    return yaml.safe_dump({"name": "chain", "nodes": nodes}, sort_keys=False)


DIAMOND = yaml.safe_dump(
    {
        "name": "diamond",
        "nodes": {
            "a": {"skill": "echo", "input": {"x": "=input.x"}},
            "b": {"skill": "echo", "input": {"a": "=nodes.a.output.x"}},
            "c": {"skill": "echo", "input": {"a": "=nodes.a.output.x"}},
            "d": {"skill": "echo", "input": {"b": "=nodes.b.output", "c": "=nodes.c.output"}},
            "e": {"skill": "echo", "input": {"d": "=nodes.d.output"}},
        },
    },
    sort_keys=False,
)


async def wait_run(client: ClawClient, run_id: str, deadline_s: float) -> api.WorkflowRunView:
    end = time.monotonic() + deadline_s
    while True:
        view = await client.call(verbs.WORKFLOW_SHOW, api.WorkflowRunGetRequest(run_id=run_id))
        if view.state != "running" or time.monotonic() > end:
            return view
        await asyncio.sleep(0.2)  # polls cost the coordinator (it runs in this process): not too often


async def plain_tasks(client: ClawClient, count: int) -> float:
    """`count` echo tasks one after the other, each submitted once the previous one succeeded."""
    started = time.monotonic()
    previous = 0
    for i in range(count):
        [result] = await client.submit_many(
            [TaskSpec(skill="echo", input=msgspec.Raw(json.dumps({"i": i, "prev": previous}).encode()))]
        )
        states = await client.wait([result.task_id], timeout_s=60)
        assert states[result.task_id] == TaskState.SUCCEEDED
        previous = i
    return time.monotonic() - started


async def concurrent_runs(client: ClawClient, runs: int, deadline_s: float) -> dict[str, Any]:
    started = time.monotonic()
    sem = asyncio.Semaphore(200)

    async def one(i: int) -> str:
        async with sem:
            raw = msgspec.Raw(json.dumps({"x": i}).encode())
            reply = await client.call(verbs.WORKFLOW_RUN, api.WorkflowRunRequest(name="diamond", input=raw))
            return reply.run_id

    ids = await asyncio.gather(*(one(i) for i in range(runs)))
    submitted_s = time.monotonic() - started
    end = started + deadline_s
    unfinished = len(ids)
    while time.monotonic() < end:
        listed = await client.call(
            verbs.WORKFLOW_LIST, api.WorkflowListRequest(name="diamond", state="running", limit=1000)
        )
        unfinished = len(listed.runs)
        if unfinished == 0:
            break
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    done = await client.call(verbs.WORKFLOW_LIST, api.WorkflowListRequest(name="diamond", limit=1000))
    states: dict[str, int] = {}
    for run in done.runs:
        states[run.state] = states.get(run.state, 0) + 1
    return {
        "runs": runs,
        "started_in_s": round(submitted_s, 2),
        "all_done_in_s": round(elapsed, 2),
        "runs_per_s": round(runs / elapsed, 1),
        "tasks_per_s": round(runs * 5 / elapsed, 1),
        "stuck": unfinished,
        "states_of_newest_1000": states,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging(LogSettings(level="error", format="console"), process="bench-workflows")
    root = Path(tempfile.mkdtemp(prefix="bench-workflows-"))
    server = await EmbeddedNatsServer(NatsServerOptions(store_dir=root / "nats", port=0, http_port=0)).start_async()
    prefix = "benchwf"
    config = load_config(
        None,
        env={},
        overrides={
            "nats": {"url": server.client_url, "prefix": prefix, "monitor_url": server.monitor_url},
            "coordinator": {"db_path": str(root / "claw.db")},
            "artifacts": {"local_dir": str(root / "artifacts")},
        },
    )
    launcher = Launcher(
        log_dir=root,
        env=child_env(
            CLAW_NATS_URL=server.client_url,
            CLAW_NATS_PREFIX=prefix,
            CLAW_ARTIFACTS_LOCAL_DIR=str(root / "artifacts"),
            CLAW_LOG_LEVEL="warning",
        ),
    )
    coordinator = await Coordinator.start(config)
    stop = asyncio.Event()
    serving = asyncio.create_task(coordinator.run(stop))
    report: dict[str, Any] = {}
    try:
        await coordinator.ready.wait()
        for i in range(args.workers):
            launcher.claw(f"worker-{i}", "worker", "start", "--node-id", f"bench-w{i}", "--concurrency", "16")
        client = await ClawClient.connect(config.nats)
        try:
            while sum(n.status == "online" for n in await client.nodes()) < args.workers:  # noqa: ASYNC110
                await asyncio.sleep(0.2)  # polling the API: there is no event to wait on
            engine = coordinator.workflows
            await engine.register(chain_spec(args.chain))
            await engine.register(DIAMOND)
            await plain_tasks(client, 10)  # warm-up: imports, consumers, connections

            baseline_s = await plain_tasks(client, args.chain)
            run_id = await engine.start_run("chain", {})
            started = time.monotonic()
            view = await wait_run(client, run_id, 300)
            chain_s = time.monotonic() - started
            assert view.state == "succeeded", view.error
            chain_latencies = list(engine.stats.latencies_s)
            report["chain"] = {
                "nodes": args.chain,
                "plain_tasks_s": round(baseline_s, 3),
                "workflow_chain_s": round(chain_s, 3),
                "ratio_chain_over_plain": round(chain_s / baseline_s, 3),
                "per_node_ms": round(chain_s / args.chain * 1000, 2),
                "per_plain_task_ms": round(baseline_s / args.chain * 1000, 2),
            }
            report["dispatch_chain_ms"] = {
                "count": len(chain_latencies),
                "p50": round(percentile(chain_latencies, 50) * 1000, 2),
                "p99": round(percentile(chain_latencies, 99) * 1000, 2),
            }
            engine.stats.latencies_s.clear()
            report["concurrent"] = await concurrent_runs(client, args.runs, args.deadline_s)
            loaded = list(engine.stats.latencies_s)
            report["dispatch_under_load_ms"] = {
                "count": len(loaded),
                "p50": round(percentile(loaded, 50) * 1000, 2),
                "p99": round(percentile(loaded, 99) * 1000, 2),
                "mean": round(statistics.fmean(loaded) * 1000, 2) if loaded else None,
            }
        finally:
            await client.close()
    finally:
        stop.set()
        await asyncio.wait_for(serving, 60)
        await launcher.stop_all_async()
        server.stop()
    return report


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench_workflows.py", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="concurrent runs of the 5-node workflow")
    parser.add_argument("--chain", type=int, default=100, help="nodes in the chain (and plain tasks)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--deadline-s", type=float, default=600.0, help="when an unfinished run counts as stuck")
    add_json_option(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    sys.exit(run_and_emit(main(arguments), json_path=arguments.json_path))
