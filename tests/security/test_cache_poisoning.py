"""The response cache as an attacker holding a worker's credentials would try it (issue 11 / 12 item 6).

The key is a digest of public parts (model, messages, parameters, tenant): with write access to the
bucket, any worker credential could put a made-up answer under it, served as the llm.chat result of
every equal call (any tenant's) for the TTL. So the server refuses a worker's writes to the bucket,
and the coordinator writes an entry only for the node holding the attempt of a real task, under the
key it computes itself. A real nats-server with authentication (the permissions `claw creds`
generates), a coordinator, a worker `w1` and a fake LLM API; `w2` is the attacker's worker.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import pytest

from common import verbs
from common.api import CachePutRequest
from common.clock import SYSTEM_CLOCK
from common.errors import PermissionDeniedError
from common.states import TaskState
from communication.api_client import ClawClient
from communication.response_cache import ResponseCache, input_key
from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import eventually, run_to_success, spec, succeeded
from tests.security.bus import SecuredCluster, secured_cluster

KEY_ENV = "CLAW_TEST_POISON_KEY"
CHAT: dict[str, Any] = {"model": "fake-c", "messages": [{"role": "user", "content": "what is 2+2?"}], "cache_ttl_s": 60}
FAKE = {"message": {"role": "assistant", "content": "POISONED"}, "model": "fake-c", "finish_reason": "stop"}
BUCKET = "claw_flow_cache"


@pytest.fixture
async def cluster(
    tmp_path: Path, openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SecuredCluster]:
    monkeypatch.setenv(KEY_ENV, "sk-poison")
    async with secured_cluster(tmp_path, tools=openai_server.tools(tmp_path / "sandboxes", KEY_ENV)) as running:
        yield running


async def _run(client: ClawClient, input: dict[str, Any]) -> str:
    return await run_to_success(client, "llm.chat", input, what="the call done")


async def test_a_workers_credentials_cannot_put_an_answer_into_the_cache(
    cluster: SecuredCluster, openai_server: FakeOpenAIServer
) -> None:
    key = input_key("fake-c", CHAT, "default")
    async with cluster.client("alice") as alice, cluster.client("w2") as attacker:
        first = await _run(alice, CHAT)  # a real call by w1: the coordinator cached its answer
        real = (await alice.get_task(first, history=False)).result
        assert real is not None and b"POISONED" not in bytes(real)

        # w2 overwrites the entry as nats-py's KeyValue.put would, and tries to (re)create the bucket.
        forged = msgspec.json.encode({"expires_at": 4e9, "result": FAKE})
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await attacker.conn.js.publish(f"$KV.{BUCKET}.{key}", forged, timeout=2)
        await eventually(lambda: cluster.violations("Publish", f'"$KV.{BUCKET}.{key}"'), what="the put refused")
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await attacker.conn.js.publish(f"$KV.{BUCKET}.{'0' * 64}", forged, timeout=2)  # a fresh key too
        await attacker.conn.nc.publish(f"$JS.API.STREAM.CREATE.KV_{BUCKET}", b"{}")
        await attacker.conn.nc.publish(f"$JS.API.STREAM.PURGE.KV_{BUCKET}", b"{}")
        await attacker.conn.nc.flush()
        await eventually(lambda: cluster.violations("Publish", f"STREAM.PURGE.KV_{BUCKET}"), what="the purge refused")
        assert cluster.violations("Publish", f"STREAM.CREATE.KV_{BUCKET}")

        # A worker still reads the cache (that is how it answers a hit): the real answer, intact.
        cached = await ResponseCache(attacker.conn, SYSTEM_CLOCK).get(key)
        assert cached is not None and json.loads(cached) == json.loads(bytes(real))
        assert await ResponseCache(attacker.conn, SYSTEM_CLOCK).get("0" * 64) is None

        # And the next equal call is answered from the cache with the real answer.
        again = await _run(alice, CHAT)
        assert len(openai_server.completions()) == 1
        assert json.loads(bytes((await alice.get_task(again, history=False)).result or b"")) == json.loads(bytes(real))


async def test_a_worker_cannot_report_an_answer_for_an_attempt_another_node_holds(
    cluster: SecuredCluster, openai_server: FakeOpenAIServer
) -> None:
    chat = {**CHAT, "messages": [{"role": "user", "content": "held"}]}
    openai_server.flowing.clear()  # w1's call waits at the API: the task runs on w1 meanwhile
    try:
        async with cluster.client("alice") as alice, cluster.client("w2") as attacker:
            [result] = await alice.submit_many([spec("llm.chat", chat)])

            async def running_on_w1() -> Any:
                task = await alice.get_task(result.task_id, history=False)
                return task if task.state == TaskState.RUNNING and task.node_id == "w1" else None

            task = await eventually(running_on_w1, what="the call running on w1")
            fake = msgspec.Raw(msgspec.json.encode(FAKE))
            # w2 names w1 as the reporting node: its credentials make it w2 whatever it says.
            for node in ("w1", "w2"):
                report = CachePutRequest(task_id=task.task_id, attempt=task.attempts, model="fake-c", ttl_s=3600,
                                         result=fake, node_id=node)  # fmt: skip
                with pytest.raises(PermissionDeniedError, match="does not hold attempt"):
                    await attacker.call(verbs.CACHE_PUT, report)
            key = input_key("fake-c", chat, "default")
            assert await ResponseCache(attacker.conn, SYSTEM_CLOCK).get(key) is None
            # An admin's credentials do not hold the worker role either.
            async with cluster.client("adam") as admin:
                with pytest.raises(PermissionDeniedError, match="needs the worker role"):
                    await admin.call(verbs.CACHE_PUT, report)

            openai_server.flowing.set()
            await eventually(lambda: succeeded(alice, result.task_id), what="the held call done")
            cached = await ResponseCache(attacker.conn, SYSTEM_CLOCK).get(key)
            assert cached is not None and b"POISONED" not in cached  # w1's real answer
    finally:
        openai_server.flowing.set()
