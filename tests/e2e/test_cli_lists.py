"""End to end through `claw`: paged lists that say when more exist, a held-task limit, and a re-dead
task with one dead letter and its attempts shown per series."""

from __future__ import annotations

import json
import re

import pytest

from common.config import NatsSettings
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from tests.e2e.test_cli_cluster import start_cluster
from tests.helpers import ProcessPool, spec, wait_until

pytestmark = pytest.mark.e2e


async def test_lists_say_how_many_more_exist_and_held_tasks_have_a_limit(
    processes: ProcessPool, nats_server: EmbeddedNatsServer, prefix: str
) -> None:
    processes.env["CLAW_COORDINATOR_MAX_WAITING_APPROVAL"] = "250"
    start_cluster(processes, workers=1)
    async with await ClawClient.connect(NatsSettings(url=nats_server.client_url, prefix=prefix)) as client:
        await client.submit_many(
            [spec("http.request", {"url": f"https://example.com/{n}", "method": "POST"}) for n in range(250)]
        )

    shown = processes.run("approvals")
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout.strip().splitlines()) == 1 + 100  # header + the default --limit
    assert shown.stderr.strip() == "showing 100 of 250 held tasks; see more with --limit N, or all with --all"

    everything = processes.run("approvals", "--all", "--json")
    assert everything.returncode == 0 and everything.stderr == ""
    assert len({v["task_id"] for v in json.loads(everything.stdout)}) == 250

    listed = processes.run("task", "list", "--limit", "120")
    assert len(listed.stdout.strip().splitlines()) == 1 + 120
    assert listed.stderr.strip() == "showing 120 of 250 tasks; see more with --limit N, or all with --all"
    listed = processes.run("task", "list", "--limit", "120", "--json")
    assert len(json.loads(listed.stdout)) == 120
    assert json.loads(listed.stderr) == {  # with --json, stderr is JSON too
        "notice": "showing 120 of 250 tasks; see more with --limit N, or all with --all",
        "shown": 120,
        "total": 250,
    }

    full = processes.run("submit", "http.request", "--input", '{"url": "https://example.com/x", "method": "POST"}')
    assert full.returncode == 1 and "Traceback" not in full.stderr
    refusal = (
        r"error: approvals full: 250 tasks wait for approval and the limit is 250 \(coordinator\.max_waiting_approval\)"
    )
    assert re.fullmatch(refusal + r".*\n", full.stderr), full.stderr


def test_a_replayed_task_that_dies_again_has_one_letter_and_shows_attempts_per_series(
    processes: ProcessPool,
) -> None:
    start_cluster(processes, workers=1)
    submitted = processes.run("submit", "fail", "--input", '{"message": "broken"}', "--wait", "--json")
    assert submitted.returncode == 1
    [task] = json.loads(submitted.stdout)
    task_id = task["task_id"]

    def letters() -> list[dict[str, object]]:
        result = processes.run("dlq", "list", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    wait_until(lambda: len(letters()) == 1, timeout_s=20, what="the first dead letter")
    replay = processes.run("dlq", "replay", task_id)
    assert replay.returncode == 0 and f"{task_id} replayed: it runs again" in replay.stdout

    def dead_again() -> bool:
        found = letters()
        return len(found) == 1 and found[0]["letter"]["series"] == 2  # type: ignore[index]

    wait_until(dead_again, timeout_s=20, what="one letter, of the second series")
    status = json.loads(processes.run("status", "--json").stdout)
    assert status["dlq_messages"] == 1 == status["tasks_by_state"]["dead"]
    shown = processes.run("task", "show", task_id)
    # A permanent error ends a series at its first attempt (of the default 3).
    assert "attempts         attempt 1 of 3 (series 2; 2 in all)" in shown.stdout
    assert "dead on attempt 1 of 3 (series 2; 2 in all)" in shown.stdout
    assert "2 of 3" not in shown.stdout
    table = processes.run("dlq", "list")
    assert re.search(rf"{task_id}\s+2 \(series 2\)", table.stdout), table.stdout
