"""Reading nats-server's HTTP monitoring endpoint (`/varz`, `/jsz`).

urllib is blocking, so the fetch runs in a worker thread; a server that does not answer within the
timeout yields a `NatsServerInfo` whose `error` says so rather than an exception.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from common.models import NatsServerInfo


async def fetch_server_info(monitor_url: str, *, timeout_s: float = 2.0) -> NatsServerInfo:
    """Version, connections, message counts and JetStream usage of the server at `monitor_url`."""
    return await asyncio.to_thread(_fetch, monitor_url.rstrip("/"), timeout_s)


def _get(url: str, timeout_s: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - operator-given URL
        data: dict[str, Any] = json.loads(response.read())
        return data


def _fetch(base: str, timeout_s: float) -> NatsServerInfo:
    try:
        varz = _get(f"{base}/varz", timeout_s)
        jsz = _get(f"{base}/jsz", timeout_s)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return NatsServerInfo(monitor_url=base, error=f"monitoring endpoint {base} not readable: {reason}")
    return NatsServerInfo(
        version=str(varz.get("version", "")),
        connections=int(varz.get("connections", 0)),
        in_msgs=int(varz.get("in_msgs", 0)),
        out_msgs=int(varz.get("out_msgs", 0)),
        jetstream_streams=int(jsz.get("streams", 0)),
        jetstream_consumers=int(jsz.get("consumers", 0)),
        jetstream_messages=int(jsz.get("messages", 0)),
        jetstream_bytes=int(jsz.get("bytes", 0)),
        jetstream_memory=int(jsz.get("memory", 0)),
        monitor_url=base,
    )
