"""The web dashboard: server-rendered pages (Jinja2) with plain JavaScript for actions and live views.

Every page reads through `GatewayCalls` as the logged-in person, so it shows and offers only what
their roles allow (the API refuses the rest anyway). Actions are `fetch` calls to the REST API with
the session's CSRF token; live parts use the WebSocket (`/v1/live`) and SSE. Assets ship in the
package (gateway/templates, gateway/static): nothing is fetched from the internet.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from common import __version__, api, verbs
from common.errors import ClawError, NotAuthenticatedError
from common.models import EventView, NodeView, TaskView
from common.states import TERMINAL_STATES, NodeStatus, TaskState
from common.verbs import Role, Verb
from gateway.context import Caller, Gateway
from gateway.errors import STATUS_OF_CODE
from gateway.sessions import COOKIE, CSRF_FIELD

HERE = Path(__file__).parent
PAGE_SIZE = 50
# The pages of the navigation bar: path, title.
NAV = (
    ("/", "Overview"),
    ("/tasks", "Tasks"),
    ("/approvals", "Approvals"),
    ("/dlq", "Dead letters"),
    ("/workflows", "Workflows"),
    ("/schedules", "Schedules"),
    ("/nodes", "Nodes"),
    ("/skills", "Skills"),
    ("/limits", "Limits"),
    ("/docs", "API"),
)
# The tasks page's time filter: created within the last N seconds (value), and its label.
TIME_WINDOWS = (
    ("", "any time"),
    ("900", "last 15 min"),
    ("3600", "last hour"),
    ("86400", "last 24 h"),
    ("604800", "last 7 days"),
)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _raw_json(value: msgspec.Raw | bytes | None, indent: int | None = 2) -> str:
    if value is None:
        return "null"
    try:
        return json.dumps(msgspec.json.decode(bytes(value)), indent=indent, sort_keys=False)
    except msgspec.DecodeError:
        return bytes(value).decode(errors="replace")


def _compact_json(value: msgspec.Raw | bytes | None) -> str:
    if value is None:
        return "null"
    return bytes(value).decode(errors="replace")


def _event_detail(event: EventView) -> str:
    """A timeline row's data, readable: a progress row as `40 % sleeping`, others as compact JSON."""
    if not event.data or bytes(event.data) in (b"null", b"{}"):
        return ""
    data = msgspec.json.decode(bytes(event.data))
    if event.kind == "progress" and isinstance(data, dict) and isinstance(data.get("percent"), int | float):
        return f"{data['percent']:.0f} % {data.get('message') or ''}".strip()
    if event.kind == "artifact" and isinstance(data, dict) and "name" in data:
        return f"{data['name']} ({data.get('size', '?')} bytes)"
    if event.kind == "usage" and isinstance(data, dict) and "input_tokens" in data:
        model = f", {data['model']}" if data.get("model") else ""
        return f"{data['input_tokens']} tokens in / {data.get('output_tokens', 0)} out{model}"
    return bytes(event.data).decode(errors="replace")


def _ago(epoch: float | None) -> str:
    if not epoch:
        return "-"
    seconds = max(0.0, time.time() - epoch)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _stamp(epoch: float | None) -> str:
    return "-" if not epoch else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f} %"


def _node_counts(nodes: list[NodeView]) -> str:
    """The nodes page's heading: how many are online, and of those how many take work and how many
    are paused, draining or drained (an online node that takes no work is not capacity)."""
    online = [n for n in nodes if n.status != NodeStatus.OFFLINE]
    line = f"{len(online)} online of {len(nodes)}"
    idle = {status: sum(n.status == status for n in online) for status in NodeStatus if status != NodeStatus.ONLINE}
    if not any(idle.values()):
        return line
    taking = sum(n.status == NodeStatus.ONLINE for n in online)
    return ", ".join([f"{line}: {taking} taking work"] + [f"{k} {status}" for status, k in idle.items() if k])


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(), auto_reload=False)
    env.filters.update(
        rawjson=_raw_json,
        compactjson=_compact_json,
        event_detail=_event_detail,
        ago=_ago,
        stamp=_stamp,
        duration=_duration,
        percent=_percent,
        node_counts=_node_counts,
    )
    env.globals.update(nav=NAV, version=__version__, states=[s.value for s in TaskState])
    return env


def reproduce_command(view: TaskView) -> str:
    """The `claw submit` line that submits the same task again."""
    # One line, spaced as people write JSON (`{"a": 1, "b": 2}`).
    words = ["claw", "submit", view.skill, "--input", _raw_json(view.input, indent=None)]
    if view.priority.value != "normal":
        words += ["--priority", view.priority.value]
    words += ["--max-attempts", str(view.max_attempts), "--timeout", f"{view.timeout_s:g}"]
    if view.tenant != "default":
        words += ["--tenant", view.tenant]
    return " ".join(shlex.quote(w) for w in words)


def error_page(code: str) -> tuple[int, str]:
    """The HTTP status and the title of the page shown for a refusal with this code: every
    not-found code (a task, a run, a schedule, a node) is "Not found", as over the REST API."""
    status = STATUS_OF_CODE.get(code)
    if status == 404:
        return 404, "Not found"
    if status == 403:
        return 403, "Not allowed"
    return (502 if "unavailable" in code else 400), "Something went wrong"


def _progress(view: TaskView) -> float | None:
    """The last progress a task reported in its current attempt (percent), None when none."""
    for event in reversed(view.events):
        if event.kind == "progress" and event.attempt == view.attempts:
            data = msgspec.json.decode(bytes(event.data)) if event.data else None
            if isinstance(data, dict) and isinstance(data.get("percent"), int | float):
                return float(data["percent"])
        if event.kind == "started" and event.attempt == view.attempts:
            return None
    return None


class Dashboard:
    """The dashboard's pages."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.env = _environment()

    def routes(self) -> list[BaseRoute]:
        """Its routes, static assets included."""
        pages = {
            "/": self.overview,
            "/tasks": self.tasks,
            "/tasks/{task_id}": self.task,
            "/approvals": self.approvals,
            "/dlq": self.dlq,
            "/nodes": self.nodes,
            "/skills": self.skills,
            "/workflows": self.workflows,
            "/runs/{run_id}": self.run,
            "/schedules": self.schedules,
            "/limits": self.limits,
            "/docs": self.docs,
        }
        routes: list[BaseRoute] = [Route(path, self._page(handler), methods=["GET"]) for path, handler in pages.items()]
        routes += [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        return routes

    # --- rendering ----------------------------------------------------------------------------

    def render(self, name: str, caller: Caller | None, http_status: int = 200, **context: Any) -> Response:
        """A page, with the person, their roles and the CSRF token for its scripts."""
        may = {role.value: caller.principal.may(role) for role in Role} if caller else {}
        html = self.env.get_template(name).render(
            user=caller.principal if caller else None,
            may=may,
            csrf=caller.session.csrf if caller and caller.session else "",
            **context,
        )
        return HTMLResponse(html, status_code=http_status, headers=SECURITY_HEADERS)

    def _page(self, handler: Any) -> Any:
        async def page(request: Request) -> Response:
            try:
                caller = await self.gw.authenticate(request)
            except NotAuthenticatedError:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            try:
                response: Response = await handler(request, caller)
                return response
            except ClawError as exc:
                status, title = error_page(exc.code)
                return self.render("error.html", caller, http_status=status, title=title, message=str(exc))

        return page

    async def not_found(self, request: Request) -> Response:
        """The "Not found" page for a path nothing serves (a person typed or followed a wrong link);
        with the navigation when they are logged in."""
        try:
            caller: Caller | None = await self.gw.authenticate(request)
        except ClawError:
            caller = None
        message = f"no page at {request.url.path}" + ("; the navigation above lists every page" if caller else "")
        return self.render("error.html", caller, http_status=404, title="Not found", message=message)

    async def _call(self, caller: Caller, verb: Verb[Any, Any], request: Any) -> Any:
        return await self.gw.calls.call(caller.principal, verb, request)

    # --- login --------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        """The login page: paste an API key."""
        return self.render("login.html", None, next=_safe_next(request.query_params.get("next")), error=None)

    async def login(self, request: Request) -> Response:
        """Check the key, set the session cookie, go where the person was going."""
        form = await request.form()
        key, target = str(form.get("key", "")).strip(), _safe_next(str(form.get("next", "/")))
        try:
            principal = await self.gw.keys.resolve(key)
        except NotAuthenticatedError as exc:
            return self.render("login.html", None, http_status=401, next=target, error=str(exc))
        cookie, _ = self.gw.signer.issue(principal.credential)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(self.gw.signer.ttl_s),
            httponly=True,
            samesite="strict",
            secure=self.gw.settings.secure_cookies,
        )
        return response

    async def logout(self, request: Request) -> Response:
        """End the session (CSRF-checked like every other change)."""
        form = await request.form()
        await self.gw.authenticate(request, csrf=str(form.get(CSRF_FIELD, "")))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    # --- pages --------------------------------------------------------------------------------

    async def overview(self, request: Request, caller: Caller) -> Response:
        """Tasks by state, rates, queues, nodes and alerts; live."""
        status = (await self._call(caller, verbs.STATUS, api.StatusRequest())).status
        nodes = (await self._call(caller, verbs.NODES, api.NodesRequest(limit=200))).nodes
        return self.render("overview.html", caller, page="/", status=status, nodes=nodes)

    async def tasks(self, request: Request, caller: Caller) -> Response:
        """The task list: filters, paging, live states and progress, the submit form, bulk actions."""
        query = request.query_params
        state = query.get("state") or None
        if state is not None and state not in {s.value for s in TaskState}:
            state = None
        skill = query.get("skill") or None
        tenant = query.get("tenant") or None
        cursor = query.get("cursor") or None
        since = query.get("since") or ""
        if since not in dict(TIME_WINDOWS):
            since = ""
        after = time.time() - int(since) if since else None
        filter_state = None if state is None else TaskState(state)
        listing = api.TaskListRequest(
            state=filter_state, skill=skill, tenant=tenant, limit=PAGE_SIZE, cursor=cursor, created_after=after
        )
        page = await self._call(caller, verbs.TASK_LIST, listing)
        skills = []
        if caller.principal.may(Role.SUBMITTER):
            registered = (await self._call(caller, verbs.SKILLS, api.SkillsRequest())).skills
            skills = [s.entry.manifest.name for s in registered if s.entry.enabled]
        return self.render(
            "tasks.html", caller, page="/tasks", tasks=page.tasks, next_cursor=page.next_cursor, total=page.total,
            state=state or "", skill=skill or "", tenant=tenant or "", skills=sorted(set(skills)), since=since,
            windows=TIME_WINDOWS, filtered=bool(state or skill or tenant or since),
        )  # fmt: skip

    async def task(self, request: Request, caller: Caller) -> Response:
        """One task: timeline, progress, attempts, result, artifacts, actions; live."""
        view = await self._call(caller, verbs.TASK_GET, api.TaskGetRequest(task_id=request.path_params["task_id"]))
        last_event_id = max((e.id for e in view.events), default=0)
        finished = view.state in TERMINAL_STATES
        return self.render(
            "task.html", caller, page="/tasks", task=view, progress=_progress(view), finished=finished,
            last_event_id=last_event_id, reproduce=reproduce_command(view),
        )  # fmt: skip

    async def approvals(self, request: Request, caller: Caller) -> Response:
        """What waits for approval, why, and who approved already."""
        reply = await self._call(caller, verbs.APPROVALS, api.ApprovalsRequest(limit=200))
        return self.render("approvals.html", caller, page="/approvals", approvals=reply.approvals, total=reply.total)

    async def dlq(self, request: Request, caller: Caller) -> Response:
        """Dead letters with every attempt's error and traceback."""
        reply = await self._call(caller, verbs.DLQ_LIST, api.DlqListRequest(limit=100))
        return self.render("dlq.html", caller, page="/dlq", letters=reply.letters, total=reply.total)

    async def nodes(self, request: Request, caller: Caller) -> Response:
        """Nodes: load, running/capacity, skills, labels, controls."""
        reply = await self._call(caller, verbs.NODES, api.NodesRequest(limit=1000))
        return self.render("nodes.html", caller, page="/nodes", nodes=reply.nodes, now=time.time())

    async def skills(self, request: Request, caller: Caller) -> Response:
        """Skills: versions, risk, enabled, where they run."""
        reply = await self._call(caller, verbs.SKILLS, api.SkillsRequest())
        return self.render("skills.html", caller, page="/skills", skills=reply.skills)

    async def workflows(self, request: Request, caller: Caller) -> Response:
        """Registered workflows and the newest runs."""
        state = request.query_params.get("state") or None
        reply = await self._call(caller, verbs.WORKFLOW_LIST, api.WorkflowListRequest(state=state, limit=100))
        return self.render("workflows.html", caller, page="/workflows", workflows=reply.workflows, runs=reply.runs,
                           state=state or "")  # fmt: skip

    async def run(self, request: Request, caller: Caller) -> Response:
        """One run drawn as its graph, in layers by dependency; live while it runs."""
        request_ = api.WorkflowRunGetRequest(run_id=request.path_params["run_id"])
        view = await self._call(caller, verbs.WORKFLOW_SHOW, request_)
        return self.render("run.html", caller, page="/workflows", run=view, layers=_layers(view.nodes))

    async def schedules(self, request: Request, caller: Caller) -> Response:
        """Every schedule: its rule, target, next and last fire."""
        reply = await self._call(caller, verbs.SCHEDULE_LIST, api.ScheduleListRequest())
        return self.render("schedules.html", caller, page="/schedules", schedules=reply.schedules)

    async def limits(self, request: Request, caller: Caller) -> Response:
        """Each key's use against its limit, cooldowns and breakers; usage by tenant, skill and model."""
        limits = (await self._call(caller, verbs.LIMITS_LIST, api.LimitsListRequest())).limits
        usage = await self._call(caller, verbs.USAGE, api.UsageRequest())
        return self.render("limits.html", caller, page="/limits", limits=limits, usage=usage.rows)

    async def docs(self, request: Request, caller: Caller) -> Response:
        """The REST API, read from the OpenAPI document."""
        from gateway.openapi import document

        spec = document()
        operations = [(path, method.upper(), op) for path, ops in spec["paths"].items() for method, op in ops.items()]
        return self.render("docs.html", caller, page="/docs", operations=operations)


def _layers(nodes: list[api.WorkflowNodeView]) -> list[list[api.WorkflowNodeView]]:
    """Nodes in layers: each node one layer right of the deepest node it needs (a drawing of the DAG)."""
    depth: dict[str, int] = {}
    by_name = {node.name: node for node in nodes}

    def layer(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            needs = [n for n in by_name[name].needs if n in by_name and n not in seen]
            depth[name] = 1 + max((layer(n, seen | {name}) for n in needs), default=-1)
        return depth[name]

    layers: list[list[api.WorkflowNodeView]] = []
    for node in nodes:
        index = layer(node.name)
        while len(layers) <= index:
            layers.append([])
        layers[index].append(node)
    return layers


def _safe_next(target: str | None) -> str:
    """Where to go after the login: a path of this site only (never another host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
