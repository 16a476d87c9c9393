"""Bad bytes from a careless or hostile client get one clear `invalid_input` line and leak nothing.

A raw nats-py client sends what `claw` never would (5,000-level nesting, invalid UTF-8, a 500 KB
id, a far-future id) straight to the API subjects of a real coordinator process; the `claw` CLI
gets the same inputs from the command line. A secret sits in the first bytes of every request: it
must not reach the coordinator's log (tracebacks' locals once carried the first 80 bytes of it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import nats
import pytest

from common.ids import UlidGenerator
from tests.helpers import ProcessPool, wait_until

pytestmark = pytest.mark.e2e

SECRET = "sk-live-7f3a9c0e5b1d2468ace0"  # a marker to look for in logs, not a credential
DEEP = 5000


def start_cluster(pool: ProcessPool) -> None:
    pool.spawn("coordinator", "coordinator", "start")
    pool.spawn("worker", "worker", "start", "--node-id", "w1", "--concurrency", "2")

    def online() -> bool:
        result = pool.run("nodes", "--json")
        return result.returncode == 0 and any(n["status"] == "online" for n in json.loads(result.stdout))

    wait_until(online, timeout_s=40, interval_s=0.3, what="a worker online")


def submit_body(input_json: bytes, **spec: Any) -> bytes:
    """A submit request with the secret first, as a careless client would send it."""
    extra = b"".join(b',"' + k.encode() + b'":' + json.dumps(v).encode() for k, v in spec.items())
    task = b'{"skill":"echo","input":{"token":"' + SECRET.encode() + b'","data":' + input_json + b"}" + extra + b"}"
    return b'{"tasks":[' + task + b"]}"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def ask(nc: nats.NATS, prefix: str, verb: str, body: bytes) -> dict[str, Any]:
    msg = await nc.request(f"{prefix}.api.prober.{verb}", body, timeout=15)
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


def assert_clear_error(reply: dict[str, Any], code: str, *words: str) -> str:
    error = reply.get("error")
    assert error is not None, reply
    message: str = error["message"]
    assert error["code"] == code, error
    assert "\n" not in message and len(message) < 400, message
    for word in words:
        assert word in message, message
    return message


async def test_bad_bytes_sent_to_the_api_get_one_clear_invalid_input_line_and_no_secret_is_logged(
    processes: ProcessPool, nats_server: Any, prefix: str
) -> None:
    start_cluster(processes)
    nc = await nats.connect(nats_server.client_url)
    try:
        # 5,000 levels: msgspec itself gives up at ~1,000 (RecursionError); the cluster's limit is 64.
        reply = await ask(nc, prefix, "submit", submit_body(nested(DEEP)))
        assert_clear_error(reply, "invalid_input", "nested too deeply")
        # Over the limit but well under Python's recursion limit: the same refusal, naming the limit.
        reply = await ask(nc, prefix, "submit", submit_body(nested(100)))
        assert_clear_error(reply, "invalid_input", "nest", "64", "coordinator.max_input_depth")
        # At the limit it is accepted (the input object itself is one level, its "data" array the rest).
        reply = await ask(nc, prefix, "submit", submit_body(nested(63)))
        assert reply.get("error") is None, reply

        # Invalid UTF-8 in a string of the input, and in a key.
        reply = await ask(nc, prefix, "submit", submit_body(b'"abc\xff\xfe"'))
        assert_clear_error(reply, "invalid_input", "UTF-8")
        reply = await ask(nc, prefix, "submit", submit_body(b'{"\xc3\x28": 1}'))
        assert_clear_error(reply, "invalid_input", "UTF-8")
        # ... and in the envelope (a field msgspec decodes itself).
        reply = await ask(nc, prefix, "submit", b'{"tasks":[{"skill":"ec\xffho","input":{}}]}')
        assert_clear_error(reply, "invalid_input", "UTF-8")

        # A 500 KB id is not echoed back whole.
        huge_id = "A" * 500_000
        for verb in ("task_get", "task_cancel", "task_retry", "approve", "artifacts"):
            body = json.dumps({"task_id": huge_id, "by": "x", "reason": "x"}).encode()
            message = assert_clear_error(await ask(nc, prefix, verb, body), "not_found")
            assert "AAAAAAAAAA" in message and "500000 characters" in message

        # Client-chosen ids must be ULIDs of a plausible time: not from the far future...
        far_future = UlidGenerator().new(now_ms=int((time.time() + 50 * 365 * 86400) * 1000))
        reply = await ask(nc, prefix, "submit", submit_body(b"1", task_id=far_future))
        assert_clear_error(reply, "invalid_input", far_future, "future")
        # ... nor past the end of the ULID range (the first character carries only 3 bits) ...
        reply = await ask(nc, prefix, "submit", submit_body(b"1", task_id="Z" + far_future[1:]))
        assert_clear_error(reply, "invalid_input", "not a valid ULID")
        # ... nor from before this project could have made them; a few seconds ahead is clock skew.
        reply = await ask(nc, prefix, "submit", submit_body(b"1", task_id="0" * 26))
        assert_clear_error(reply, "invalid_input", "1970")
        skewed = UlidGenerator().new(now_ms=int((time.time() + 20) * 1000))
        reply = await ask(nc, prefix, "submit", submit_body(b"1", task_id=skewed))
        assert reply.get("error") is None, reply

        # The coordinator is healthy and never logged the secret, a traceback or an internal error.
        reply = await ask(nc, prefix, "ping", b"{}")
        assert reply.get("error") is None
    finally:
        await nc.close()
    [coordinator] = [p for p in processes.processes if p.name == "coordinator"]
    log = coordinator.output()
    assert SECRET not in log
    assert "Traceback" not in log and '"exception"' not in log
    assert "api.failed" not in log and "RecursionError" not in log


def test_the_cli_refuses_bad_inputs_with_one_line(processes: ProcessPool, tmp_path: Path) -> None:
    start_cluster(processes)
    deep = tmp_path / "deep.json"
    deep.write_bytes(b'{"token":"' + SECRET.encode() + b'","data":' + nested(DEEP) + b"}")
    too_deep = tmp_path / "too-deep.json"
    too_deep.write_bytes(b'{"data":' + nested(100) + b"}")
    bad_utf8 = tmp_path / "bad-utf8.json"
    bad_utf8.write_bytes(b'{"token":"' + SECRET.encode() + b'\xff"}')
    for path, words in ((deep, ("nest",)), (too_deep, ("nest", "64")), (bad_utf8, ("UTF-8",))):
        result = processes.run("submit", "echo", "--input-file", str(path))
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert all(word in lines[0] for word in words), lines[0]
        assert SECRET not in result.stderr
    result = processes.run("task", "show", "B" * 100_000)
    assert result.returncode == 1
    assert len(result.stderr) < 400 and "100000 characters" in result.stderr, result.stderr[:500]
    [coordinator] = [p for p in processes.processes if p.name == "coordinator"]
    assert SECRET not in coordinator.output() and "Traceback" not in coordinator.output()
