"""Tasks filtered by when they were created, through the gateway (`GET /v1/tasks?created_after=`,
`created_before=`), through `ClawClient`, and on the dashboard's tasks page (`?since=3600`), against a
real coordinator, nats-server and uvicorn. Tasks of another time are submitted with client-chosen
ids of that time (ids are ULIDs: they carry their creation time)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from common.config import ClawConfig
from common.ids import _encode, ulid_floor
from tests.gateway_helpers import RunningGateway, gateway_cluster
from tests.helpers import connected_client

HOUR = 3600.0


def _id_at(at: float, n: int) -> str:
    """A task id made at `at` (Unix seconds), the n-th of that millisecond."""
    return _encode((int(at * 1000) << 80) | (n + 1), 26)


@pytest.fixture
async def gw(gw_config: ClawConfig) -> AsyncIterator[RunningGateway]:
    """A coordinator and a gateway, no worker: the tasks stay queued."""
    async with gateway_cluster(gw_config, worker=False) as gateway:
        yield gateway


async def test_tasks_are_filtered_by_their_creation_time_over_rest_the_client_and_the_dashboard(
    gw: RunningGateway, gw_config: ClawConfig
) -> None:
    now = time.time()
    old = [_id_at(now - 3 * HOUR, n) for n in range(2)]  # three hours ago
    async with gw.client("sam") as sam:
        # No worker runs: the tasks stay queued, which is all a list needs.
        body = {"tasks": [{"skill": "echo", "input": {}, "task_id": task_id} for task_id in old]}
        assert (await sam.post("/v1/tasks", json=body)).status_code == 200
        fresh = [(await sam.post("/v1/tasks", json={"skill": "echo", "input": {}})).json()["results"][0]["task_id"]]
        recent = (await sam.get("/v1/tasks", params={"created_after": now - HOUR})).json()
        assert [t["task_id"] for t in recent["tasks"]] == fresh and recent["total"] == 1
        earlier = (await sam.get("/v1/tasks", params={"created_before": now - HOUR})).json()
        assert [t["task_id"] for t in earlier["tasks"]] == sorted(old, reverse=True) and earlier["total"] == 2
        window = {"created_after": now - 4 * HOUR, "created_before": now - HOUR, "limit": 1}
        first = (await sam.get("/v1/tasks", params=window)).json()
        second = (await sam.get("/v1/tasks", params={**window, "cursor": first["next_cursor"]})).json()
        assert [t["task_id"] for t in first["tasks"] + second["tasks"]] == sorted(old, reverse=True)
        assert second["next_cursor"] is None
        bad = await sam.get("/v1/tasks", params={"created_after": "yesterday"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"

    async with connected_client(gw_config) as client:
        page = await client.tasks_page(created_after=now - HOUR)
        assert [t.task_id for t in page.items] == fresh
        assert {t.task_id for t in await client.list_tasks(created_before=now - HOUR)} == set(old)
        assert ulid_floor(now - 3 * HOUR) <= min(old)

    async with httpx.AsyncClient(base_url=gw.url) as browser:
        login = await browser.post("/login", data={"key": gw.keys["vera"], "next": "/tasks?since=3600"})
        assert login.status_code == 303
        page = (await browser.get("/tasks?since=3600")).text
        assert re.findall(r'<tr data-task="([0-9A-Z]+)"', page) == fresh
        assert '<option value="3600" selected>last hour</option>' in page and 'data-since="3600"' in page
        everything = (await browser.get("/tasks")).text
        assert len(re.findall(r'<tr data-task="', everything)) == 3
        nothing = (await browser.get("/tasks?since=900&skill=sleep")).text
        assert "No tasks match this filter." in nothing
