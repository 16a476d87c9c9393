#!/usr/bin/env python3
"""Flow control's benchmark: `python scripts/bench_flow.py [--tasks N] [--rpm N] [--rate-s S] [--json FILE]`.

One embedded cluster (nats-server, a coordinator, 2 workers x 10 slots as processes), then:

1. **Limiter overhead on unlimited tasks**: `--tasks` echo tasks submitted and waited for, without
   any limit configured and with 20 limits configured (on keys echo does not use), alternating
   A/B/A/B in the same run; the ratio of the B runs' throughput to the A runs'.
2. **Achieved rate vs RPM**: llm.chat tasks against a fake API on loopback (tests/fakes) under
   `claw limits set llm:bench --rpm N --concurrency 5`, for `--rate-s` seconds: the requests the
   API served per minute against the limit, and the violations it counted (must be 0).

docs/Flow_control.md ("Measured") reports the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.bench.script import add_json_option, run_and_emit  # noqa: E402
from cli.cluster import ClusterProcesses  # noqa: E402
from cli.processes import Launcher  # noqa: E402
from common import verbs  # noqa: E402
from common.api import LimitsSetRequest  # noqa: E402
from common.config import NatsSettings  # noqa: E402
from common.errors import ClawError  # noqa: E402
from common.flow import Limit  # noqa: E402
from common.models import TaskSpec  # noqa: E402
from common.states import TaskState  # noqa: E402
from communication.api_client import ClawClient  # noqa: E402
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

KEY_ENV = "CLAW_BENCH_LLM_KEY"


def spec(skill: str, payload: dict[str, Any]) -> TaskSpec:
    return TaskSpec(skill=skill, input=msgspec.Raw(msgspec.json.encode(payload)))


async def run_batch(client: ClawClient, specs: list[TaskSpec]) -> float:
    """Submit `specs` (in requests of 500) and wait until all finished; tasks per second."""
    began = time.perf_counter()
    ids: list[str] = []
    for start in range(0, len(specs), 500):
        ids += [r.task_id for r in await client.submit_many(specs[start : start + 500])]
    await client.wait(ids)
    return len(ids) / (time.perf_counter() - began)


async def overhead(client: ClawClient, tasks: int) -> dict[str, Any]:
    """A/B/A/B: echo throughput without, then with, 20 limits configured."""
    await run_batch(client, [spec("echo", {"n": i}) for i in range(min(tasks, 500))])  # warm-up
    runs: dict[str, list[float]] = {"without": [], "with": []}
    for round_ in range(2):
        runs["without"].append(await run_batch(client, [spec("echo", {"n": i}) for i in range(tasks)]))
        if round_ == 0:
            for k in range(20):
                limit = Limit(key=f"bench:other-{k}", requests=100, concurrency=5)
                await client.call(verbs.LIMITS_SET, LimitsSetRequest(limit=limit))
        runs["with"].append(await run_batch(client, [spec("echo", {"n": i}) for i in range(tasks)]))
        if round_ == 0:
            for k in range(20):
                await client.call(verbs.LIMITS_DELETE, verbs.LIMITS_DELETE.request(key=f"bench:other-{k}"))
    a, b = sum(runs["without"]) / 2, sum(runs["with"]) / 2
    return {"tasks": tasks, "without_per_s": runs["without"], "with_per_s": runs["with"], "ratio": b / a}


async def achieved_rate(client: ClawClient, api: FakeOpenAIServer, rpm: int, seconds: float) -> dict[str, Any]:
    """llm.chat tasks through a limited key for `seconds`: requests served per minute vs the RPM."""
    api.enforce(requests=rpm, window_s=60.0, concurrency=5)
    api.latency_s = 0.02
    limit = Limit(key="llm:bench", requests=rpm, window_s=60.0, concurrency=5)
    await client.call(verbs.LIMITS_SET, LimitsSetRequest(limit=limit))
    count = int(rpm * (seconds / 60.0 + 1)) + 10  # more than can run: the limit is what binds
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    ids = [r.task_id for r in await client.submit_many([spec("llm.chat", body) for _ in range(count)])]
    began = time.monotonic()
    await asyncio.sleep(seconds)
    starts = [s for s in api.stats.starts if s >= began - 1]
    served = len(starts)
    # A sliding window allows `rpm` in any minute: over k whole minutes from the first start, at
    # most k * rpm. The achieved rate is what was served in them against that.
    minutes = int(seconds // 60)
    in_minutes = sum(1 for s in starts if s < starts[0] + minutes * 60.0) if starts else 0
    result = {
        "rpm": rpm,
        "seconds": seconds,
        "served": served,
        "most_in_a_minute": api.stats.most_in_window(60.0),
        "violations": api.stats.violations,
        "rate_limited": api.stats.rate_limited,
    }
    if minutes:
        result["achieved_per_min"] = in_minutes / minutes
        result["achieved_ratio"] = in_minutes / (minutes * rpm)
    result["best_minute_ratio"] = api.stats.most_in_window(60.0) / rpm
    for task_id in ids:  # the rest would run on: cancel them
        with contextlib.suppress(ClawError):  # finished meanwhile
            task = await client.get_task(task_id, history=False)
            if task.state not in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD):
                await client.cancel(task_id)
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="claw-bench-flow-"))
    nats = EmbeddedNatsServer(NatsServerOptions(store_dir=root / "nats", port=0, http_port=0))
    await nats.start_async()
    launcher = Launcher(log_dir=root / "logs", env=dict(os.environ), cwd=ROOT)
    results: dict[str, Any] = {}
    with FakeOpenAIServer.running() as api:
        env = {
            "CLAW_TOOLS_LLM_BASE_URL": api.base_url,
            "CLAW_TOOLS_LLM_API_KEY_ENV": KEY_ENV,
            KEY_ENV: "sk-bench",
            "CLAW_TOOLS_HTTP_ALLOW_PRIVATE": "127.0.0.1",
            "PYTHONPATH": str(ROOT),
        }
        cluster = ClusterProcesses(
            launcher, root, nats_url=nats.client_url, monitor_url=nats.monitor_url, prefix=f"b{uuid.uuid4().hex[:8]}",
            workers=2, concurrency=10, node_id=lambda i: f"bench-{i}", env=env,
        )  # fmt: skip
        try:
            cluster.start()
            await cluster.wait_ready()
            async with await ClawClient.connect(NatsSettings(url=nats.client_url, prefix=cluster.prefix)) as client:
                if args.tasks:
                    results["overhead"] = await overhead(client, args.tasks)
                    print(json.dumps(results["overhead"]), flush=True)
                if args.rate_s:
                    results["rate"] = await achieved_rate(client, api, args.rpm, args.rate_s)
                    print(json.dumps(results["rate"]), flush=True)
        finally:
            await cluster.stop()
            launcher.stop_all()
            nats.stop()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="echo tasks per overhead run (0: skip it)")
    parser.add_argument("--rpm", type=int, default=600, help="the limited key's requests per minute")
    parser.add_argument("--rate-s", type=float, default=150.0, help="how long the rate phase runs (0: skip it)")
    add_json_option(parser)
    options = parser.parse_args()
    # Each phase printed its figures as it finished: nothing more to print.
    sys.exit(run_and_emit(main(options), render=None, json_path=options.json_path))
