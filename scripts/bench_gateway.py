#!/usr/bin/env python3
"""Benchmark of the HTTP gateway, next to the NATS submit measured in the same run.

Starts, in a temporary directory and through the launcher of `claw up`: nats-server, a coordinator,
one worker and a gateway (each a real process, on loopback). Then measures

- submit latency (p50/p95/p99) through the gateway (`POST /v1/tasks`, one echo task per request,
  keep-alive connections) at 1 in flight and at N in flight, and the same submits through
  `ClawClient` over NATS (the baseline: what the gateway adds is the difference), with the worker
  paused so that what is timed is the admission path, not the tasks' execution on the same cores;
- SSE fan-out: W watchers of one task's events (`GET /v1/tasks/{id}/events`) while it reports
  progress; for each progress event, the delay from when the worker reported it (`at`) to when
  each watcher received it (p50/p99), and whether every watcher got every event once;
- the CPU time the gateway and the coordinator spend per submit in each of those runs (steadier
  than latency on a shared machine);
- the gateway's RSS after all that.

    python scripts/bench_gateway.py                    # N=50 and 200 in flight, 500 watchers
    python scripts/bench_gateway.py --concurrency 100 --requests 2000 --json

Every loop is bounded in count and time; everything it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import psutil  # noqa: E402

from cli.cluster import ClusterProcesses  # noqa: E402
from cli.processes import Launcher, child_env  # noqa: E402
from common.config import ClawConfig, LogSettings, NatsSettings  # noqa: E402
from common.log import configure_logging  # noqa: E402
from common.models import TaskSpec  # noqa: E402
from common.states import NodeControl  # noqa: E402
from common.verbs import Role  # noqa: E402
from communication.api_client import ClawClient  # noqa: E402
from communication.nats_server import NatsServerOptions  # noqa: E402
from gateway.server import open_key_store  # noqa: E402


class RawHttp:
    """One keep-alive HTTP/1.1 connection, written and read by hand: httpx's connection pool costs
    more CPU per request at 50+ in flight than the gateway does, and the client shares the machine."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, key: str) -> None:
        self.reader, self.writer, self.host, self.key = reader, writer, host, key

    @classmethod
    async def open(cls, url: str, key: str) -> RawHttp:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}", key)

    def _send(self, method: str, path: str, body: bytes = b"") -> None:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)

    async def _head(self) -> tuple[int, dict[str, str]]:
        status = int((await self.reader.readline()).split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and read its whole answer (Content-Length bodies)."""
        self._send(method, path, body)
        status, headers = await self._head()
        return status, await self.reader.readexactly(int(headers.get("content-length", "0")))

    async def stream_lines(self, path: str) -> AsyncIterator[str]:
        """GET an event stream (chunked) and yield its lines until it ends."""
        self._send("GET", path)
        status, _ = await self._head()
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
        pending = b""
        while True:
            size = int((await self.reader.readline()).strip(), 16)
            if size == 0:
                return
            pending += await self.reader.readexactly(size)
            await self.reader.readexactly(2)
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds."""
    if not samples_s:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    ordered = sorted(samples_s)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "n": len(ordered)}


async def timed_runs(requests: int, lanes: list[Any]) -> list[float]:
    """Run `requests` calls spread over `lanes` (one call in flight per lane); each call's latency."""
    latencies: list[float] = []
    queue = iter(range(requests))

    async def run(one: Any) -> None:
        for _ in queue:
            started = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(run(one) for one in lanes))
    return latencies


class CpuMeter:
    """CPU time (user + system) the gateway and the coordinator spend while a block runs, in us per
    submit: steadier than latency on a shared machine, and it shows where each submit's cost lands."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes

    def _now(self) -> dict[str, float]:
        return {name: sum(p.cpu_times()[:2]) for name, p in self.processes.items()}

    @contextlib.contextmanager
    def per_submit(self, submits: int, into: dict[str, float]) -> Iterator[None]:
        """Fill `into` with each process's CPU us per submit spent in the block."""
        before = self._now()
        yield
        after = self._now()
        into.update({name: round((after[name] - before[name]) / submits * 1e6) for name in before})


async def submit_latency(
    url: str, key: str, client: ClawClient, requests: int, concurrency: int, cpu: CpuMeter
) -> dict[str, Any]:
    body = msgspec.json.encode({"skill": "echo", "input": {"bench": True}})
    gateway_cpu: dict[str, float] = {}
    nats_cpu: dict[str, float] = {}
    connections = [await RawHttp.open(url, key) for _ in range(concurrency)]

    def http_lane(connection: RawHttp) -> Any:
        async def http_submit() -> None:
            status, answer = await connection.request("POST", "/v1/tasks", body)
            if status != 200:
                raise RuntimeError(f"submit answered {status}: {answer!r}")

        return http_submit

    try:
        lanes = [http_lane(c) for c in connections]
        await timed_runs(min(50, requests), lanes)  # warm-up
        with cpu.per_submit(requests, gateway_cpu):
            gateway = await timed_runs(requests, lanes)
    finally:
        for connection in connections:
            await connection.close()
    spec = TaskSpec(skill="echo", input=msgspec.Raw(b'{"bench": true}'))

    async def nats_submit() -> None:
        await client.submit(spec)

    await timed_runs(min(50, requests), [nats_submit] * concurrency)
    with cpu.per_submit(requests, nats_cpu):
        nats = await timed_runs(requests, [nats_submit] * concurrency)
    return {"concurrency": concurrency, "gateway": percentiles(gateway), "nats": percentiles(nats),
            "cpu_us_per_submit": {"gateway": gateway_cpu, "nats": nats_cpu}}  # fmt: skip


async def sse_fanout(url: str, key: str, watchers: int, seconds: int) -> dict[str, Any]:
    opener = await RawHttp.open(url, key)
    _, answer = await opener.request(
        "POST", "/v1/tasks", msgspec.json.encode({"skill": "sleep", "input": {"seconds": seconds}})
    )
    task_id = json.loads(answer)["results"][0]["task_id"]
    delays: list[float] = []
    ids_per_watcher: list[list[int]] = []

    async def watch() -> None:
        ids: list[int] = []
        connection = await RawHttp.open(url, key)
        try:
            async for line in connection.stream_lines(f"/v1/tasks/{task_id}/events"):
                if not line.startswith("data: "):
                    continue
                received = time.time()
                event = json.loads(line[6:])
                if "id" not in event:
                    break  # the end
                ids.append(event["id"])
                if event["kind"] == "progress":
                    delays.append(received - event["at"])
        finally:
            await connection.close()
        ids_per_watcher.append(ids)

    async with asyncio.timeout(seconds + 120):
        await asyncio.gather(*(watch() for _ in range(watchers)))
    reader = await RawHttp.open(url, key)  # a new connection: an idle one is closed after 5 s
    _, view = await reader.request("GET", f"/v1/tasks/{task_id}")
    await reader.close()
    log = [e["id"] for e in json.loads(view)["events"]]
    complete = sum(ids == log for ids in ids_per_watcher)
    return {"watchers": watchers, "events": len(log), "watchers_with_every_event_once": complete,
            "progress_delay": percentiles(delays)}  # fmt: skip


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # Warnings and errors only, on stderr: `--json` prints the report alone on stdout.
    configure_logging(LogSettings(level="warning", format="console"), process="bench-gateway")
    workdir = Path(tempfile.mkdtemp(prefix="claw-bench-gateway-"))
    launcher = Launcher(log_dir=workdir / "logs", env=child_env(), cwd=workdir)
    try:
        nats = await launcher.start_nats(NatsServerOptions(store_dir=workdir / "nats", port=0, http_port=0))
        cluster = ClusterProcesses(
            launcher, workdir, nats_url=nats.client_url, monitor_url=nats.monitor_url, prefix="bench", workers=1,
            concurrency=64, node_id=lambda i: f"bench-w{i}", env=child_env(CLAW_LOG_LEVEL="warning"),
            gateway_listen="127.0.0.1:0",
        )  # fmt: skip
        cluster.start()
        await cluster.wait_ready()
        url = cluster.gateway_url
        assert url is not None
        settings = NatsSettings(url=nats.client_url, prefix="bench")
        async with await ClawClient.connect(settings) as client:
            store = await open_key_store(client.conn, ClawConfig(nats=settings))
            _, key = await store.create("bench", [Role.SUBMITTER, Role.VIEWER])
            report: dict[str, Any] = {"requests": args.requests}
            report["sse"] = await sse_fanout(url, key, args.watchers, args.seconds)
            # Submits measured with the worker paused: the tasks queue, and what is timed is the
            # admission path alone, not the machine's two cores also running the tasks.
            await client.node_control("bench-w1", NodeControl.PAUSED)
            cpu = CpuMeter({name: psutil.Process(cluster.children[name].pid) for name in ("gateway", "coordinator")})
            report["submit"] = [
                await submit_latency(url, key, client, args.requests, n, cpu) for n in (1, *args.concurrency)
            ]
        gateway = psutil.Process(cluster.children["gateway"].pid)
        report["gateway_rss_mb"] = round(gateway.memory_info().rss / 1048576, 1)
        report["cpus"] = psutil.cpu_count()
        return report
    finally:
        await launcher.stop_all_async()
        shutil.rmtree(workdir, ignore_errors=True)


def render(report: dict[str, Any]) -> str:
    lines = [f"gateway benchmark ({report['cpus']} CPUs, {report['requests']} submits per run)"]
    for run in report["submit"]:
        g, n = run["gateway"], run["nats"]
        lines.append(
            f"  submit, {run['concurrency']:>3} in flight: gateway p50 {g['p50_ms']} ms, p95 {g['p95_ms']} ms, "
            f"p99 {g['p99_ms']} ms | NATS p50 {n['p50_ms']} ms, p95 {n['p95_ms']} ms, p99 {n['p99_ms']} ms | "
            f"p95 ratio {g['p95_ms'] / n['p95_ms']:.2f}"
        )
        cpu = run["cpu_us_per_submit"]
        lines.append(
            f"    CPU us per submit: gateway {cpu['gateway']['gateway']} + coordinator {cpu['gateway']['coordinator']}"
            f" | NATS: coordinator {cpu['nats']['coordinator']}"
        )
    sse = report["sse"]
    d = sse["progress_delay"]
    lines.append(
        f"  SSE: {sse['watchers']} watchers, {sse['events']} events, {sse['watchers_with_every_event_once']} got "
        f"every event once; progress delay p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms"
    )
    lines.append(f"  gateway RSS: {report['gateway_rss_mb']} MiB")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="submits per measurement")
    parser.add_argument(
        "--concurrency", type=lambda text: [int(n) for n in text.split(",")], default=[50, 200],
        help="submits in flight for the runs after the one at 1 (comma-separated)",
    )  # fmt: skip
    parser.add_argument("--watchers", type=int, default=500, help="SSE watchers of one task")
    parser.add_argument("--seconds", type=int, default=5, help="how long the watched task runs (1 progress/s)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    options = parser.parse_args()
    from cli.bench.script import as_json, run_and_emit

    sys.exit(run_and_emit(main(options), render=as_json if options.json else render))
