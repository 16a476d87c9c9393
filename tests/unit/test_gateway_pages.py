"""What a new user reads from the gateway: the message of a refused one-task submit, the dashboard's
"run it again" line and the API page's verb-and-role column.

Found by trying the dashboard and the REST API as a new user would (issue 14, "Done when"); each
test renders or builds with the real code (the routes, the Jinja templates, the OpenAPI document).
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from common.api import LimitView
from common.errors import InvalidInputError
from common.flow import Limit
from common.models import NodeView, TaskView
from common.states import NodeControl, NodeStatus, Priority, TaskState
from gateway.dashboard import _environment, error_page, reproduce_command
from gateway.errors import error_response
from gateway.openapi import document
from gateway.routes import ROUTES

SUBMIT = next(r for r in ROUTES if r.method == "POST" and r.path == "/v1/tasks")


def _refusal(body: object) -> str:
    with pytest.raises(InvalidInputError) as refused:
        SUBMIT.build(msgspec.json.encode(body), {}, {}, {}, "alice")
    return str(refused.value)


def test_a_refused_one_task_submit_names_the_place_in_the_body_that_was_sent() -> None:
    # `{"skill": ...}` is wrapped as a batch of one inside; the message must not name `$.tasks[0]`,
    # a field the caller never sent.
    missing = _refusal({"input": {}})
    assert "missing required field `skill` - at `$`" in missing and "tasks" not in missing, missing
    wrong = _refusal({"skill": 5, "input": {}})
    assert "at `$.skill`" in wrong and "tasks" not in wrong, wrong
    priority = _refusal({"skill": "echo", "priority": "urgent"})
    assert "at `$.priority`" in priority, priority
    # A batch names its own task, as sent.
    batch = _refusal({"tasks": [{"skill": "echo"}, {"input": {}}]})
    assert "at `$.tasks[1]`" in batch, batch


def test_the_run_it_again_line_spaces_its_json_as_people_write_it() -> None:
    view = TaskView(
        task_id="01J0",
        skill="fail",
        priority=Priority.NORMAL,
        state=TaskState.DEAD,
        input=msgspec.Raw(b'{"message":"x","retryable":true,"note":"a\\nb"}'),
        attempts=3,
        max_attempts=3,
        timeout_s=60,
        created_at=0,
    )
    line = reproduce_command(view)
    assert line == (
        """claw submit fail --input '{"message": "x", "retryable": true, "note": "a\\nb"}' """
        "--max-attempts 3 --timeout 60"
    ), line


def test_the_api_page_shows_each_routes_verb_and_role_not_markdown_cut_short() -> None:
    spec = document()
    operations = [(path, method.upper(), op) for path, ops in spec["paths"].items() for method, op in ops.items()]
    html = _environment().get_template("docs.html").render(operations=operations, user=None, page="/docs")
    rows = re.findall(r"<tr><td><span class=\"badge method-\w+\">(\w+)</span></td><td class=\"mono\">([^<]+)</td>"
                      r"\s*<td>[^<]*</td><td class=\"small muted wide-only\">(.*?)</td></tr>", html)  # fmt: skip
    by_route = {(method, path): cell for method, path, cell in rows}
    assert len(by_route) == len(operations)
    assert by_route[("POST", "/v1/tasks")] == "<code>submit</code> · submitter"
    assert by_route[("POST", "/v1/approvals/{task_id}/approve")] == "<code>approve</code> · approver"
    assert by_route[("POST", "/v1/verbs/{verb}")] == "<code>{verb}</code> · the verb&#39;s"
    assert by_route[("GET", "/healthz")] == "none (no credential)"
    assert not any("`" in cell for cell in by_route.values())


def test_every_not_found_code_is_a_404() -> None:
    # A missing schedule or workflow run answered 400, as if the request were malformed.
    for code in ("not_found", "node_not_found", "artifact_not_found", "schedule_not_found", "workflow_not_found"):
        assert error_response(code, "no such thing").status_code == 404, code
    assert error_response("invalid_input", "bad").status_code == 400


def test_the_dashboard_shows_a_missing_run_or_schedule_as_not_found() -> None:
    # A run that does not exist was "Something went wrong" (400), a task "Not found" (404).
    for code in ("not_found", "workflow_not_found", "schedule_not_found", "node_not_found"):
        assert error_page(code) == (404, "Not found"), code
    assert error_page("forbidden") == (403, "Not allowed")
    assert error_page("coordinator_unavailable") == (502, "Something went wrong")
    assert error_page("invalid_input") == (400, "Something went wrong")
    page = _environment().get_template("error.html")
    html = page.render(title="Not found", message="no workflow run nope", user=None)
    assert "<h1>Not found</h1>" in html and "no workflow run nope" in html


def _node(node_id: str, status: NodeStatus, control: NodeControl = NodeControl.ACTIVE) -> NodeView:
    return NodeView(
        node_id=node_id, status=status, hostname="vm", pid=1, version="0", skills=["echo"], labels={}, capacity=4,
        running=0, cpu_percent=1.0, memory_percent=1.0, rss_mb=1.0, load1=0.0, started_at=0.0, last_seen=0.0,
        control=control,
    )  # fmt: skip


def _nodes_page(nodes: list[NodeView]) -> str:
    return _environment().get_template("nodes.html").render(nodes=nodes, user=None, may={}, now=0.0)


def _heading(html: str) -> str:
    match = re.search(r"<h1>Nodes <span class=\"muted\">([^<]*)</span></h1>", html)
    assert match is not None, html
    return match.group(1)


def test_the_nodes_heading_counts_drained_and_paused_nodes_apart_from_those_taking_work() -> None:
    # A drained node counted as online: "2 online of 2" while only one took work.
    drained = _node("w2", NodeStatus.DRAINED, NodeControl.DRAINED)
    assert _heading(_nodes_page([_node("w1", NodeStatus.ONLINE), drained])) == "2 online of 2: 1 taking work, 1 drained"
    mixed = [_node("a", NodeStatus.PAUSED, NodeControl.PAUSED), _node("b", NodeStatus.DRAINING, NodeControl.DRAINED),
             _node("c", NodeStatus.OFFLINE), _node("d", NodeStatus.ONLINE), _node("e", NodeStatus.DRAINED)]  # fmt: skip
    assert _heading(_nodes_page(mixed)) == "4 online of 5: 1 taking work, 1 paused, 1 draining, 1 drained"
    assert _heading(_nodes_page([_node("w1", NodeStatus.ONLINE), _node("w2", NodeStatus.OFFLINE)])) == "1 online of 2"


def test_a_node_shows_what_it_was_asked_only_while_it_differs_from_what_it_does() -> None:
    # A drained node showed both "drained" and "asked: drained".
    html = _nodes_page([_node("w1", NodeStatus.DRAINED, NodeControl.DRAINED)])
    assert re.findall(r'<span class="badge[^"]*">([^<]+)</span>', html) == ["drained"]
    html = _nodes_page([_node("w1", NodeStatus.DRAINING, NodeControl.DRAINED)])
    assert re.findall(r'<span class="badge[^"]*">([^<]+)</span>', html) == ["draining", "asked: drained"]


def _limits_page(limits: list[LimitView]) -> str:
    return _environment().get_template("limits.html").render(limits=limits, usage=[], user=None, may={})


def test_a_key_used_without_a_limit_is_not_listed_as_a_limit() -> None:
    # After an http.request task, /limits listed `http:example.com` with the limit "none", so the
    # "no rate limit is set" state never showed.
    used = LimitView(key="http:example.com", requests_last_minute=3, in_flight=1)
    html = _limits_page([used])
    assert "No rate limit is set" in html and '<h1>Limits <span class="muted">0</span></h1>' in html
    assert 'data-limit="http:example.com"' not in html
    unlimited = re.search(r'<tr data-unlimited="http:example.com">(.*?)</tr>', html, re.S)
    assert unlimited is not None and re.findall(r"<td[^>]*>([^<]*)</td>", unlimited.group(1))[:3] == ["3", "0", "1"]
    limited = LimitView(key="llm:glm-4.7", limit=Limit(key="llm:glm-4.7", requests=40), requests_last_minute=2)
    html = _limits_page([used, limited])
    assert "No rate limit is set" not in html and '<h1>Limits <span class="muted">1</span></h1>' in html
    assert 'data-limit="llm:glm-4.7"' in html and 'data-unlimited="http:example.com"' in html
    assert 'data-unlimited="llm:glm-4.7"' not in html
    assert "without a limit" not in _limits_page([limited])


def test_the_login_form_has_a_username_field_and_keeps_each_command_on_one_line() -> None:
    # Chromium warned "Password forms should have (optionally hidden) username fields", and the
    # command `claw creds create NAME --role viewer --http` broke after `--` at 1280 px.
    html = _environment().get_template("login.html").render(user=None, next="/", error=None)
    form = html[html.index("<form") : html.index("</form>")]
    assert re.search(r'<input [^>]*autocomplete="username"[^>]*hidden', form), form
    assert 'autocomplete="current-password"' in form
    commands = re.search(r'<div class="commands">(.*?)</div>', html, re.S)
    assert commands is not None, html
    assert re.findall(r"<code>([^<]+)</code>", commands.group(1)) == [
        "claw gateway key create --name NAME --roles viewer,submitter",
        "claw creds create NAME --role viewer --http",
    ]
    css = (Path(__file__).parents[2] / "gateway/static/app.css").read_text()
    assert re.search(r"\.commands code \{[^}]*white-space: nowrap", css)
