"""The gateway subscribes to the coordinator's feed of every task only while someone watches (an SSE
watcher, a WebSocket's task, tasks or overview topic): a gateway taking a stream of submits with
nobody watching receives none of their hints. Seen from nats-server's own monitoring, with a real
coordinator, worker and gateway."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import websockets

from common.config import ClawConfig
from communication.subjects import Subjects
from tests.gateway_helpers import RunningGateway, read_sse
from tests.helpers import eventually


def _gateway_subscriptions(config: ClawConfig) -> list[str]:
    """The subjects the gateway's connection subscribes to, as nats-server reports them."""
    with urllib.request.urlopen(f"{config.nats.monitor_url}/connz?subs=1&limit=1000", timeout=5) as answer:
        connections = json.load(answer)["connections"]
    return [sub for c in connections if c.get("name") == "claw-gateway" for sub in c.get("subscriptions_list", [])]


async def _feed_subscribed(config: ClawConfig) -> bool:
    feed_all = Subjects(config.nats.prefix).feed_all
    return feed_all in await asyncio.to_thread(_gateway_subscriptions, config)


async def test_the_feed_is_subscribed_only_while_a_watcher_is_connected(
    gw: RunningGateway, gw_config: ClawConfig
) -> None:
    async with gw.client("sam") as http:
        for _ in range(3):
            assert (await http.post("/v1/tasks", json={"skill": "echo", "input": {"n": 1}})).status_code == 200
        assert not await _feed_subscribed(gw_config)  # nobody watches: no hint reaches the gateway

        answer = await http.post("/v1/tasks", json={"skill": "sleep", "input": {"seconds": 2}})
        task_id = answer.json()["results"][0]["task_id"]
        watching = asyncio.create_task(read_sse(http, f"/v1/tasks/{task_id}/events"))
        try:
            await eventually(lambda: _feed_subscribed(gw_config), what="the feed subscribed for the watcher")
            messages = await asyncio.wait_for(watching, 60)
        finally:
            watching.cancel()
        assert messages[-1].event == "end" and messages[-1].data["state"] == "succeeded"
        assert any(m.data.get("kind") == "progress" for m in messages[:-1])  # live events came through

        async def unsubscribed() -> bool:
            return not await _feed_subscribed(gw_config)

        await eventually(unsubscribed, what="the feed dropped once the watcher left")


async def test_a_websocket_topic_holds_the_feed_until_it_closes(gw: RunningGateway, gw_config: ClawConfig) -> None:
    url = gw.url.replace("http://", "ws://") + "/v1/live"
    headers = {"Authorization": f"Bearer {gw.keys['vera']}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"op": "subscribe", "topic": "tasks"}))
        await eventually(lambda: _feed_subscribed(gw_config), what="the feed subscribed for the tasks topic")
        async with gw.client("sam") as http:
            answer = await http.post("/v1/tasks", json={"skill": "echo", "input": {"n": 2}})
            task_id = answer.json()["results"][0]["task_id"]

        async def feed_of_the_task() -> bool:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return bool(message.get("feed", {}).get("task_id") == task_id)

        await eventually(feed_of_the_task, what="the submitted task's feed on the socket")

    async def unsubscribed() -> bool:
        return not await _feed_subscribed(gw_config)

    await eventually(unsubscribed, what="the feed dropped once the socket closed")
