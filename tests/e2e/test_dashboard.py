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

from tests.gateway_helpers import GUARD_POLICY
from tests.helpers import ProcessPool, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"

# Prices make usage show a cost per tenant and model.
COORDINATOR_CONFIG = """
flow:
  prices:
    glm-4.7: {input_per_mtok: 0.6, output_per_mtok: 2.2}
"""
# An installed skill that writes an image, a text and a JSON artifact and reports an LLM call's tokens.
GALLERY_YAML = """
name: gallery.make
version: 1.0.0
description: Draws a small chart, writes a summary and its figures as artifacts (a dashboard test)
capabilities: [test]
risk: read_only
runtime:
  python: gallery:make
timeout_s: 30
"""
GALLERY_PY = r'''
"""gallery.make: an image, a text and a JSON artifact, and the tokens of one model call."""

import json
import struct
import zlib
from typing import Any


def _png(width: int, height: int) -> bytes:
    rows = b"".join(
        b"\x00" + b"".join(bytes((40 + 200 * x // width, 90 + 120 * y // height, 200)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


async def make(ctx: Any, input: dict[str, Any]) -> dict[str, Any]:
    figures = {"rows": 3, "total": 42.5, "label": input.get("label", "q3")}
    await ctx.put_artifact("chart.png", _png(160, 80), "image/png")
    await ctx.put_artifact("summary.txt", f"Quarter {figures['label']}: 3 rows, total 42.5\n", "text/plain")
    await ctx.put_artifact("figures.json", json.dumps(figures), "application/json")
    ctx.report_usage(1200, 300, model="glm-4.7", key="llm:glm-4.7")
    return figures
'''

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
    config = tmp_path / "claw.yaml"
    config.write_text(COORDINATOR_CONFIG)
    env = {"CLAW_COORDINATOR_GUARD_POLICY": str(policy), "CLAW_CONFIG": str(config)}
    # Alerts judged every second once 3 tasks finished (the overview's banners in a short test).
    env |= {"CLAW_COORDINATOR_ALERT_MIN_TASKS": "3", "CLAW_COORDINATOR_ALERT_INTERVAL_S": "1"}
    processes.spawn("coordinator", "coordinator", "start", env=env)
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


RED_IN_CHART = """(() => {
  const c = document.getElementById('throughput');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 180 && d[i + 1] < 100 && d[i + 2] < 100) return true;
  return false;
})()"""


ONE_LINE_WHOLE = """(c) => {
  const text = document.createRange();
  text.selectNodeContents(c);
  return text.getClientRects().length === 1 && c.scrollWidth <= c.clientWidth;
}"""


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
    page = browser.new_context(viewport={"width": 1280, "height": 720}, bypass_csp=True).new_page()
    page.goto(cluster.url + "/login")
    # Each command of the hint on one line, whole (`claw creds create NAME --role viewer --http` broke after `--`).
    for command in page.locator(".commands code").all():
        assert command.evaluate(ONE_LINE_WHOLE), command.inner_text()
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
    bob.wait_for_selector("#toast:has-text('Approve: done')", timeout=3000)  # still said after the reload
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
    alice.locator(f'article[data-task="{dead_id}"] button:has-text("Replay")').click()
    alice.wait_for_selector(".toast:has-text('done')")
    wait_until(lambda: cluster.api("GET", f"/v1/tasks/{dead_id}", cluster.keys["vera"])["series"] == 2)

    # Drain the node, then resume it.
    alice.goto(cluster.url + "/nodes")
    alice.locator('article[data-node="w1"] button:has-text("Drain")').click()
    alice.wait_for_selector('article[data-node="w1"] button:has-text("Drain")[disabled]')

    def w1_status() -> str:
        return str(cluster.api("GET", "/v1/nodes", cluster.keys["vera"])["nodes"][0]["status"])

    wait_until(lambda: w1_status() == "drained", what="w1 drained")
    alice.reload()
    # One badge once the node does what it was asked, and a drained node is not counted as taking work.
    assert alice.locator('article[data-node="w1"] .badge').all_inner_texts() == ["drained"]
    assert "1 online of 1: 0 taking work, 1 drained" in alice.inner_text("h1")
    shot(alice, cluster, "nodes")
    alice.locator('article[data-node="w1"] button:has-text("Resume")').click()
    alice.wait_for_selector('article[data-node="w1"] button:has-text("Drain"):not([disabled])')

    # A workflow run drawn as its graph (a diamond), rerun from a middle node from the page.
    nodes = {
        "fetch": {"skill": "echo", "input": {"k": "=input.k"}},
        "clean": {"skill": "sleep", "needs": ["fetch"], "input": {"seconds": 1}},
        "stats": {"skill": "echo", "needs": ["fetch"], "input": {"rows": 3}},
        "publish": {"skill": "echo", "needs": ["clean", "stats"], "input": {"done": True}},
    }
    spec = json.dumps({"name": "report", "nodes": nodes})
    assert "version" in cluster.api("POST", "/v1/verbs/workflow_register", cluster.keys["alice"], {"spec": spec})
    run_id = cluster.api("POST", "/v1/workflows/report/runs", cluster.keys["alice"], {"input": {"k": 1}})["run_id"]
    alice.goto(f"{cluster.url}/runs/{run_id}")
    alice.wait_for_selector("#run-state.state-succeeded")  # followed live ...
    alice.wait_for_selector("#run-page[data-finished=true]")  # ... then reloaded once it ended
    shot(alice, cluster, "run")
    alice.locator('[data-node="clean"] button:has-text("Rerun from here")').click()
    alice.wait_for_url(lambda url: "/runs/" in url and run_id not in url)
    alice.wait_for_selector('[data-node="fetch"]:has-text("reused")')
    alice.wait_for_selector("#run-state.state-succeeded")

    # The other pages, and a phone's width.
    # (the workflows and schedules pages are shot by the test that fills their forms)
    for path, name in (("/", "overview"), ("/skills", "skills"), ("/docs", "api")):
        alice.goto(cluster.url + path)
        alice.wait_for_selector("main")
        shot(alice, cluster, name)
    alice.goto(cluster.url + "/")
    alice.wait_for_selector("#live-dot.on")  # the overview's WebSocket is connected
    # Laptop and tablet widths: the page links stay on one row (they wrapped at 1,400 px).
    for width, rows in ((1400, 1), (1280, 1), (900, 2)):
        alice.set_viewport_size({"width": width, "height": 860})
        bar = alice.evaluate("document.querySelector('.topbar').getBoundingClientRect().height")
        links = alice.evaluate("[...new Set([...document.querySelectorAll('.topbar nav a')].map(a => a.offsetTop))]")
        assert len(links) == 1 and bar <= 40 * rows + 30, (width, bar, links)
    alice.set_viewport_size({"width": 1280, "height": 860})
    phone = login(browser, cluster, "alice", width=390, height=844)
    shot(phone, cluster, "tasks-phone")
    phone.goto(cluster.url + "/")
    shot(phone, cluster, "overview-phone")
    # At a phone's width no page is wider than the screen (wide tables scroll inside their card).
    for path in ("/", "/tasks", f"/tasks/{task_id}", "/approvals", "/dlq", "/workflows", f"/runs/{run_id}",
                 "/schedules", "/nodes", "/skills", "/limits", "/docs"):  # fmt: skip
        phone.goto(cluster.url + path)
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)
        # Hiding secondary columns keeps a row's buttons: none is hidden or cut off at the right edge.
        for button in phone.locator("main [data-action]").all():
            box = button.bounding_box()
            assert box is not None and box["x"] + box["width"] <= 390, (path, button.inner_text(), box)
    # The live dot shows only on a page that follows the cluster live (grey there means reconnecting).
    phone.goto(cluster.url + "/nodes")
    assert phone.locator("#live-dot").is_hidden()
    phone.goto(f"{cluster.url}/runs/{run_id}")
    shot(phone, cluster, "run-phone")


def test_a_tasks_artifacts_preview_inline_and_limits_show_tokens_and_cost_per_tenant_and_model(
    browser: Any, cluster: Cluster, tmp_path: Path
) -> None:
    skill = tmp_path / "gallery"
    skill.mkdir()
    (skill / "skill.yaml").write_text(GALLERY_YAML)
    (skill / "gallery.py").write_text(GALLERY_PY)
    installed = cluster.processes.run("skills", "install", str(skill))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    limit = cluster.processes.run(
        "limits", "set", "llm:glm-4.7", "--rpm", "40", "--tpm", "100000", "--concurrency", "5"
    )
    assert limit.returncode == 0, limit.stderr
    task = {"skill": "gallery.make", "input": {"label": "Q3"}, "tenant": "acme"}
    task_id = cluster.api("POST", "/v1/tasks", cluster.keys["alice"], task)["results"][0]["task_id"]
    wait_until(lambda: cluster.api("GET", f"/v1/tasks/{task_id}", cluster.keys["vera"])["state"] == "succeeded")

    vera = login(browser, cluster, "vera")
    vera.goto(f"{cluster.url}/tasks/{task_id}")
    # The image is shown inline (decoded by the browser), the text and the JSON in place.
    vera.wait_for_function(
        "document.querySelector('img.preview')?.complete && document.querySelector('img.preview').naturalWidth === 160"
    )
    text = vera.locator('pre.preview[data-preview*="summary.txt"]')
    figures = vera.locator('pre.preview[data-preview*="figures.json"]')
    text.filter(has_text="Quarter Q3: 3 rows").wait_for()
    figures.filter(has_text='"total": 42.5').wait_for()
    facts = vera.inner_text(".facts")
    assert "acme" in facts and len(vera.inner_text(".facts dd.mono.small").strip()) == 32  # tenant, trace id
    command = vera.inner_text("pre.cmd")
    assert command.startswith("claw submit gallery.make --input") and command.endswith("--tenant acme")
    attempts = vera.inner_text("table.compact")
    assert "w1" in attempts and "succeeded" in attempts
    shot(vera, cluster, "task-artifacts")

    vera.goto(cluster.url + "/limits")
    row = vera.locator('tr[data-limit="llm:glm-4.7"]')
    assert "40" in row.inner_text() and "100000" in row.inner_text()
    usage = vera.locator("#usage tr", has_text="glm-4.7")
    usage.first.wait_for()
    cells = usage.first.inner_text()
    assert "acme" in cells and "1200 / 300" in cells and "0.0014" in cells  # 1200*0.6 + 300*2.2 per million
    shot(vera, cluster, "limits")


def test_bulk_cancel_and_retry_time_filter_dead_letter_tracebacks_a_tenants_view_and_empty_and_error_pages(
    browser: Any, cluster: Cluster
) -> None:
    alice = login(browser, cluster, "alice")
    # Empty states of a new cluster, and a missing task's error page.
    assert "No tasks yet: submit one above." in alice.inner_text("#no-tasks")
    alice.goto(cluster.url + "/dlq")
    assert "The dead-letter queue is empty." in alice.inner_text("#no-letters")
    shot(alice, cluster, "dlq-empty")
    alice.goto(cluster.url + "/approvals")
    alice.wait_for_selector("#no-approvals")
    missing = alice.goto(cluster.url + "/tasks/01J00000000000000000000000")
    assert missing is not None and missing.status == 404
    assert "Not found" in alice.inner_text("main h1") and "no task with id" in alice.inner_text(".error-box")
    shot(alice, cluster, "not-found")

    # Bulk: three long tasks picked and cancelled together, then retried together.
    ids = [
        cluster.api("POST", "/v1/tasks", cluster.keys["alice"], {"skill": "sleep", "input": {"seconds": 60}})[
            "results"
        ][0]["task_id"]
        for _ in range(3)
    ]
    alice.goto(cluster.url + "/tasks")
    for task_id in ids:
        alice.check(f'tr[data-task="{task_id}"] input.pick')
    assert alice.inner_text("#selected-count") == "3"
    alice.click('button[data-bulk="cancel"]')
    alice.wait_for_selector(".toast:has-text('cancel: 3 of 3 done')")
    for task_id in ids:
        alice.wait_for_selector(f'tr[data-task="{task_id}"] .state-cancelled')
    for task_id in ids:
        alice.check(f'tr[data-task="{task_id}"] input.pick')
    alice.click('button[data-bulk="retry"]')
    alice.wait_for_selector(".toast:has-text('retry: 3 of 3 done')")
    for task_id in ids:
        alice.wait_for_selector(f'tr[data-task="{task_id}"] :is(.state-queued, .state-running)')
        assert cluster.api("GET", f"/v1/tasks/{task_id}", cluster.keys["vera"])["series"] == 2
        cluster.api("POST", f"/v1/tasks/{task_id}/cancel", cluster.keys["alice"], {})

    # The time filter: the last hour has them; the form keeps the choice.
    alice.select_option("#filter-since", "3600")
    alice.click(".filters button[type=submit]")
    alice.wait_for_url(lambda url: "since=3600" in url)
    assert alice.locator("#task-table tbody tr").count() == 3
    assert alice.eval_on_selector("#filter-since", "s => s.value") == "3600"

    # A dead letter with every attempt's error and traceback.
    failing = {"skill": "fail", "input": {"message": "upstream said 503", "retryable": True}, "max_attempts": 2}
    dead_id = cluster.api("POST", "/v1/tasks", cluster.keys["alice"], failing)["results"][0]["task_id"]
    wait_until(
        lambda: cluster.api("GET", f"/v1/tasks/{dead_id}", cluster.keys["vera"])["state"] == "dead", timeout_s=90
    )
    alice.goto(cluster.url + "/dlq")
    letter = alice.locator(f'article[data-task="{dead_id}"]')
    attempts = letter.locator("details")
    assert attempts.count() == 2
    for n in range(2):
        attempts.nth(n).locator("summary").click()
        body = attempts.nth(n).inner_text()
        assert f"attempt {n + 1} on w1" in body and "RetryableError" in body and "upstream said 503" in body
        assert "Traceback (most recent call last)" in body
    shot(alice, cluster, "dlq")
    # The task's page lists both attempts with their node and error, and the traceback.
    alice.goto(f"{cluster.url}/tasks/{dead_id}")
    rows = alice.locator("table.compact tbody tr")
    assert rows.count() == 2
    for n in range(2):
        cells = rows.nth(n).inner_text()
        assert cells.startswith(str(n + 1)) and "w1" in cells and "RetryableError upstream said 503" in cells
    assert "RetryableError" in alice.inner_text(".error-box")

    # An approver rejects a held task from the approval centre; a reason is required.
    held = {"skill": "echo", "input": {"hold": True, "say": "not this one"}}
    held_id = cluster.api("POST", "/v1/tasks", cluster.keys["alice"], held)["results"][0]["task_id"]
    bob = login(browser, cluster, "bob")
    bob.goto(cluster.url + "/approvals")
    card = bob.locator(f'article[data-task="{held_id}"]')
    card.locator('button:has-text("Reject")').click()
    bob.wait_for_selector(".toast:has-text('Give a reason first')")
    card.locator("input.reason").fill("wrong customer")
    card.locator('button:has-text("Reject")').click()
    bob.wait_for_selector(".toast:has-text('Reject: done')")
    wait_until(lambda: cluster.api("GET", f"/v1/tasks/{held_id}", cluster.keys["vera"])["state"] == "rejected")
    bob.goto(f"{cluster.url}/tasks/{held_id}")
    assert "wrong customer" in bob.inner_text("#timeline")

    # A tenant's key sees only its tenant's tasks on every page.
    created = cluster.processes.run(
        "gateway", "key", "create", "--name", "shop", "--roles", "submitter", "--tenant", "acme", "--json"
    )
    assert created.returncode == 0, created.stderr
    cluster.keys["shop"] = json.loads(created.stdout)["key"]
    shop = login(browser, cluster, "shop")
    shop.select_option("#submit-skill", "echo")
    shop.fill("#submit-input", '{"for": "acme"}')
    shop.click("#submit-form button[type=submit]")
    shop.wait_for_selector("#task-table .state-succeeded")
    rows = shop.locator("#task-table tbody tr")
    assert rows.count() == 1 and "acme" in rows.first.inner_text()
    shop.goto(f"{cluster.url}/tasks/{ids[0]}")  # alice's task, of tenant default
    assert "Not found" in shop.inner_text("main h1")
    shop.goto(cluster.url + "/dlq")
    assert shop.locator("#no-letters").count() == 1
    shop.goto(cluster.url + "/workflows")
    assert "Not allowed" in shop.inner_text("main h1")


def test_the_overview_raises_an_alert_banner_live_when_failures_pass_20_percent(browser: Any, cluster: Cluster) -> None:
    vera = login(browser, cluster, "vera")
    vera.goto(cluster.url + "/")
    vera.wait_for_selector("#live-dot.on")
    assert vera.locator(".alert-banner").count() == 0
    vera.evaluate("window.stillThisPage = true")  # gone if the page reloaded
    failing = {"skill": "fail", "input": {"message": "nope"}, "max_attempts": 1}
    body = {"tasks": [failing] * 3 + [{"skill": "echo", "input": {}}]}
    cluster.api("POST", "/v1/tasks", cluster.keys["alice"], body)
    banner = vera.locator(".alert-banner", has_text="failure")
    banner.first.wait_for(timeout=60_000)
    assert vera.evaluate("window.stillThisPage") is True  # arrived over the WebSocket, not by a reload
    vera.wait_for_function("document.querySelector('[data-state-count=dead]').textContent.trim() === '3'")
    # The throughput chart draws the failed tasks' part of their bar in red.
    vera.wait_for_function(RED_IN_CHART)
    shot(vera, cluster, "overview-alert")


def test_workflows_schedules_and_limits_are_made_from_the_browser_alone(browser: Any, cluster: Cluster) -> None:
    alice = login(browser, cluster, "alice")
    # A workflow registered from its spec pasted in the form, then run with an input from the form.
    alice.goto(cluster.url + "/workflows")
    alice.wait_for_selector("#no-workflows")
    spec = "\n".join(
        [
            "name: quarter",
            "nodes:",
            "  fetch: {skill: echo, input: {quarter: =input.quarter}}",
            "  publish: {skill: echo, needs: [fetch], input: {from: =nodes.fetch}}",
        ]
    )
    alice.fill("#register-spec", spec)
    alice.click("#register-form button[type=submit]")
    alice.wait_for_selector('tr[data-workflow="quarter"]')
    alice.select_option("#run-name", "quarter")
    alice.fill("#run-input", '{"quarter": "Q3"}')
    alice.click("#run-form button[type=submit]")
    alice.wait_for_url(lambda url: "/runs/" in url)
    alice.wait_for_selector("#run-state.state-succeeded")
    run_id = alice.url.rsplit("/", 1)[-1]
    view = cluster.api("GET", f"/v1/runs/{run_id}", cluster.keys["vera"])
    assert view["input"] == {"quarter": "Q3"} and [n["state"] for n in view["nodes"]] == ["succeeded"] * 2
    alice.goto(cluster.url + "/workflows")
    shot(alice, cluster, "workflows")

    # A schedule made from the form (every hour, a task of echo), fired by hand.
    alice.goto(cluster.url + "/schedules")
    alice.wait_for_selector("#no-schedules")
    alice.fill("#schedule-name", "hourly-echo")
    alice.select_option("#schedule-kind", "every")
    alice.fill("#schedule-rule", "1h")
    alice.fill("#schedule-target", "echo")
    alice.click("#schedule-form button[type=submit]")
    row = alice.locator('tr[data-schedule="hourly-echo"]')
    row.wait_for()
    assert "every 1h\ttask echo" in row.inner_text() and "every every" not in row.inner_text()
    row.locator('button:has-text("Fire now")').click()
    alice.wait_for_selector(".toast:has-text('Fire now: done')")
    wait_until(lambda: cluster.api("GET", "/v1/schedules/hourly-echo", cluster.keys["vera"])["fires"] != [])
    alice.click("details:has(#schedule-form) > summary")  # closed once a schedule exists
    alice.fill("#schedule-name", "broken")
    alice.select_option("#schedule-kind", "cron")
    alice.fill("#schedule-rule", "not a cron line")
    alice.fill("#schedule-target", "echo")
    alice.click("#schedule-form button[type=submit]")
    alice.wait_for_selector(".toast.bad")  # the coordinator's one-line refusal, shown
    alice.goto(cluster.url + "/schedules")
    shot(alice, cluster, "schedules")

    # A rate limit set from the form.
    alice.goto(cluster.url + "/limits")
    alice.fill("#limit-key", "llm:glm-4.7")
    alice.fill("#limit-rpm", "40")
    alice.fill("#limit-concurrency", "5")
    alice.click("#limit-form button[type=submit]")
    limit = alice.locator('tr[data-limit="llm:glm-4.7"]')
    limit.wait_for()
    assert "0 / 40" in limit.inner_text() and "0 / 5" in limit.inner_text()

    # A viewer gets none of these forms.
    vera = login(browser, cluster, "vera")
    for path, form in (("/workflows", "#register-form"), ("/schedules", "#schedule-form"), ("/limits", "#limit-form")):
        vera.goto(cluster.url + path)
        assert vera.locator(form).count() == 0, path
