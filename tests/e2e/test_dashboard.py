"""The dashboard in a real browser (Playwright driving Debian's headless Chromium) against real `claw`
processes: coordinator, worker and gateway on a real nats-server.

A person logs in with an API key, submits a task from the form and watches its progress bar move
live, in the list and on the task's page; a viewer sees a held task but cannot approve it, an
approver approves it and it finishes; an operator replays a dead letter and drains a node; a form
post without the CSRF token is refused. Every page is captured (tmp dir; with CLAW_DOCS_IMG=DIR the
screenshots are also written there, which is how docs/img/ is refreshed).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ProcessPool, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
GUARD_POLICY = """
rules:
  - name: held-echo
    match: {skill: echo, input: {hold: true}}
    action: require_approval
    approvals: 1
  - name: low-risk
    match: {risk: [read_only, write_draft]}
    action: allow
default: require_approval
default_approvals: 1
"""

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (a dev dependency)")
if not Path(CHROMIUM).exists():
    pytest.skip("no /usr/bin/chromium: apt-get install chromium (scripts/test.sh does)", allow_module_level=True)


class Cluster:
    """The processes, the gateway's URL and the API keys of the test's people."""

    def __init__(self, processes: ProcessPool, url: str, keys: dict[str, str], shots: Path) -> None:
        self.processes, self.url, self.keys, self.shots = processes, url, keys, shots

    def api(self, method: str, path: str, key: str, body: Any = None) -> Any:
        import httpx

        answer = httpx.request(method, self.url + path, json=body, headers={"Authorization": f"Bearer {key}"})
        return answer.json()


@pytest.fixture
def cluster(processes: ProcessPool, tmp_path: Path) -> Cluster:
    policy = tmp_path / "guard.yaml"
    policy.write_text(GUARD_POLICY)
    processes.spawn("coordinator", "coordinator", "start", env={"CLAW_COORDINATOR_GUARD_POLICY": str(policy)})
    processes.spawn("worker", "worker", "start", "--node-id", "w1", "--concurrency", "4")
    url_file = tmp_path / "gateway.url"
    processes.spawn("gateway", "gateway", "start", "--listen", "127.0.0.1:0", "--url-file", str(url_file))
    wait_until(url_file.exists, timeout_s=60, what="the gateway listens")
    keys = {}
    for name, roles in (("alice", "submitter,operator"), ("bob", "approver"), ("vera", "viewer")):
        created = processes.run("gateway", "key", "create", "--name", name, "--roles", roles, "--json")
        assert created.returncode == 0, created.stderr
        keys[name] = json.loads(created.stdout)["key"]
    wait_until(lambda: processes.run("nodes", "--json").stdout.count('"online"') >= 1, timeout_s=60, what="w1 online")
    return Cluster(processes, url_file.read_text().strip(), keys, tmp_path / "screens")


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def login(browser: Any, cluster: Cluster, name: str, *, width: int = 1280, height: int = 860) -> Any:
    page = browser.new_context(viewport={"width": width, "height": height}, bypass_csp=True).new_page()
    page.set_default_timeout(30_000)
    page.goto(cluster.url + "/tasks")
    assert "/login" in page.url  # no session: the login page, remembering where the person was going
    page.fill("#key", cluster.keys[name])
    page.click("button[type=submit]")
    page.wait_for_url(cluster.url + "/tasks")
    return page


def shot(page: Any, cluster: Cluster, name: str) -> None:
    cluster.shots.mkdir(parents=True, exist_ok=True)
    path = cluster.shots / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    docs = os.environ.get("CLAW_DOCS_IMG")
    if docs:
        shutil.copy(path, Path(docs) / path.name)


def progress_of(page: Any, selector: str) -> float:
    return float(page.eval_on_selector(selector, "bar => bar.hasAttribute('value') ? bar.value : -1"))


def test_log_in_submit_watch_progress_live_approve_a_held_task_and_operate(browser: Any, cluster: Cluster) -> None:
    # A wrong key is refused on the login page.
    page = browser.new_context(bypass_csp=True).new_page()
    page.goto(cluster.url + "/login")
    page.fill("#key", "ck_0123456789abcdef_" + "x" * 43)
    page.click("button[type=submit]")
    assert "unknown or revoked API key" in page.inner_text("#login-error")
    shot(page, cluster, "login")

    alice = login(browser, cluster, "alice")
    # Submit from the form; the row appears and its progress bar moves live.
    alice.select_option("#submit-skill", "sleep")
    alice.fill("#submit-input", '{"seconds": 5}')
    alice.click("#submit-form button[type=submit]")
    row = alice.locator("#task-table tbody tr").first
    row.wait_for()
    task_id = row.get_attribute("data-task")
    bar = f'tr[data-task="{task_id}"] [data-role="progress"]'
    alice.wait_for_function(f"document.querySelector('{bar}')?.value > 0")
    shot(alice, cluster, "tasks")
    # The task's page: its bar moves on as progress events arrive over SSE, then it finishes.
    alice.goto(f"{cluster.url}/tasks/{task_id}")
    first = progress_of(alice, "#task-progress")
    alice.wait_for_function(f"document.querySelector('#task-progress').value > {max(first, 0)}")
    assert alice.locator("#timeline li.kind-progress").count() >= 1
    shot(alice, cluster, "task-running")
    alice.wait_for_selector("#task-state.state-succeeded")
    alice.wait_for_selector("#task-result")  # the page reloads with the result once the task ended
    shot(alice, cluster, "task")

    # A held task: the viewer sees it but cannot approve; the approver approves and it finishes.
    alice.goto(cluster.url + "/tasks")
    alice.select_option("#submit-skill", "echo")
    alice.fill("#submit-input", '{"hold": true, "say": "release me"}')
    alice.click("#submit-form button[type=submit]")
    alice.wait_for_selector("#task-table .state-waiting_approval")
    held = alice.locator("#task-table tr:has(.state-waiting_approval)").first.get_attribute("data-task")
    vera = login(browser, cluster, "vera")
    vera.goto(cluster.url + "/approvals")
    card = vera.locator(f'article[data-task="{held}"]')
    assert "held-echo" in card.inner_text() and "alice" in card.inner_text()
    assert card.locator("button").count() == 0 and "no approver role" in card.inner_text()
    csrf = vera.get_attribute('meta[name="csrf-token"]', "content")
    refused = vera.request.post(f"{cluster.url}/v1/approvals/{held}/approve", data={}, headers={"X-CSRF-Token": csrf})
    assert refused.status == 403 and refused.json()["error"]["code"] == "forbidden"
    bob = login(browser, cluster, "bob")
    bob.goto(cluster.url + "/approvals")
    shot(bob, cluster, "approvals")
    bob.locator(f'article[data-task="{held}"] input.reason').fill("looks fine")
    bob.locator(f'article[data-task="{held}"] button:has-text("Approve")').click()
    bob.wait_for_selector("#no-approvals")
    bob.goto(f"{cluster.url}/tasks/{held}")
    bob.wait_for_selector("#task-state.state-succeeded")
    assert "approved" in bob.inner_text("#timeline")
    # Without the CSRF token, the session cookie alone changes nothing.
    forged = bob.request.post(f"{cluster.url}/v1/approvals/{held}/reject", data={"reason": "x"})
    assert forged.status == 403 and "CSRF" in forged.json()["error"]["message"]

    # A dead letter, replayed by the operator.
    failing = {"skill": "fail", "input": {"message": "boom"}, "max_attempts": 1}
    dead_id = cluster.api("POST", "/v1/tasks", cluster.keys["alice"], failing)["results"][0]["task_id"]
    wait_until(lambda: cluster.api("GET", f"/v1/tasks/{dead_id}", cluster.keys["vera"])["state"] == "dead")
    alice.goto(cluster.url + "/dlq")
    alice.wait_for_selector(f'article[data-task="{dead_id}"]')
    assert "boom" in alice.inner_text(f'article[data-task="{dead_id}"]')
    shot(alice, cluster, "dlq")
    alice.locator(f'article[data-task="{dead_id}"] button:has-text("Replay")').click()
    alice.wait_for_selector(".toast:has-text('done')")
    wait_until(lambda: cluster.api("GET", f"/v1/tasks/{dead_id}", cluster.keys["vera"])["series"] == 2)

    # Drain the node, then resume it.
    alice.goto(cluster.url + "/nodes")
    alice.locator('article[data-node="w1"] button:has-text("Drain")').click()
    alice.wait_for_selector('article[data-node="w1"] .badge:has-text("asked: drained")')
    shot(alice, cluster, "nodes")
    alice.locator('article[data-node="w1"] button:has-text("Resume")').click()
    alice.wait_for_selector('article[data-node="w1"] button:has-text("Drain"):not([disabled])')

    # A workflow run drawn as its graph, rerun from its second node from the page.
    b = {"skill": "sleep", "needs": ["a"], "input": {"seconds": 1}}
    spec = json.dumps({"name": "pair", "nodes": {"a": {"skill": "echo", "input": {"k": "=input.k"}}, "b": b}})
    assert "version" in cluster.api("POST", "/v1/verbs/workflow_register", cluster.keys["alice"], {"spec": spec})
    run_id = cluster.api("POST", "/v1/workflows/pair/runs", cluster.keys["alice"], {"input": {"k": 1}})["run_id"]
    alice.goto(f"{cluster.url}/runs/{run_id}")
    alice.wait_for_selector("#run-state.state-succeeded")  # followed live ...
    alice.wait_for_selector("#run-page[data-finished=true]")  # ... then reloaded once it ended
    shot(alice, cluster, "run")
    alice.locator('[data-node="b"] button:has-text("Rerun from here")').click()
    alice.wait_for_url(lambda url: "/runs/" in url and run_id not in url)
    alice.wait_for_selector('[data-node="a"]:has-text("reused")')

    # The other pages, and a phone's width.
    for path, name in (("/", "overview"), ("/workflows", "workflows"), ("/schedules", "schedules"),
                       ("/limits", "limits"), ("/skills", "skills"), ("/docs", "api")):  # fmt: skip
        alice.goto(cluster.url + path)
        alice.wait_for_selector("main")
        shot(alice, cluster, name)
    alice.goto(cluster.url + "/")
    alice.wait_for_selector("#live-dot.on")  # the overview's WebSocket is connected
    phone = login(browser, cluster, "alice", width=390, height=844)
    shot(phone, cluster, "tasks-phone")
    phone.goto(cluster.url + "/")
    shot(phone, cluster, "overview-phone")
