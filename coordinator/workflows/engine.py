"""The durable workflow runner: starts node tasks when their dependencies end, and records every step.

How it stays correct across crashes:

- Every change of a run or a node is a row of `workflow_runs` / `workflow_nodes` plus an event-log
  row (`workflow.*`, under `run:<run id>`), committed in one transaction by the task writer, before
  any task it implies is submitted.
- Each node is an ordinary task submitted through admission and the submit pipeline (guard, limits,
  retries, tracing all apply), with a task id derived from (run, node, item) (`runs.node_task_id`):
  submitting it again answers with the existing task, so a node's task is never dispatched twice.
- The runner reacts to node tasks' outcomes through an after-commit listener. At start, and then
  every `REPAIR_INTERVAL_S`, a periodic job reconciles: it loads unfinished runs, reads the state of
  every task their running nodes need, folds outcomes it missed (a commit made while the coordinator
  was down, or dropped for a listener too far behind) and submits what is missing (an item whose
  submit failed or never happened). So a SIGKILL at any point leaves nothing forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from opentelemetry import context as otel_context

from common import api
from common.api import SubmitRequest
from common.clock import Clock
from common.errors import (
    ClawError,
    InternalError,
    InvalidInputError,
    WorkflowNotFoundError,
)
from common.event_kinds import EventKind
from common.ids import new_id
from common.log import get_logger
from common.models import Backoff, TaskSpec
from common.states import TERMINAL_STATES, TaskState
from communication.trace_context import context_from, start_task_span
from coordinator.admission import Admission
from coordinator.operations import TaskOperations
from coordinator.skill_catalog import SkillCatalog
from coordinator.submission import SubmitPipeline
from coordinator.task_book import TaskBook
from coordinator.tenants.identity import DEFAULT_TENANT
from coordinator.workflows import store as sql
from coordinator.workflows.expressions import ExpressionError
from coordinator.workflows.runs import NodeRun, NodeState, Run, RunState, decode_result
from coordinator.workflows.spec import Trigger, parse_spec
from coordinator.workflows.store import TaskFacts, WorkflowStore
from coordinator.workflows.validate import CompiledNode, CompiledWorkflow, SkillInfo, compile_workflow
from coordinator.workflows.views import list_reply, run_view
from storage.commits import Committed
from storage.records import EventRecord, TaskRecord, WriteBatch
from storage.task_writer import TaskWriter

log = get_logger("coordinator.workflows")

REPAIR_INTERVAL_S = 2.0
RUN_ID_MAX = 200
# At most this many items in one fan-out: a list from upstream data must not become a million tasks.
MAX_ITEMS = 10_000
_json = msgspec.json.Encoder(order="sorted")
_decode = msgspec.json.Decoder()


@dataclass(slots=True)
class _Step:
    """What one pass of the runner writes and then does."""

    batch: WriteBatch = field(default_factory=WriteBatch)
    records: list[TaskRecord] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    runs: dict[str, Run] = field(default_factory=dict)
    nodes: dict[tuple[str, str], tuple[Run, NodeRun]] = field(default_factory=dict)
    # When the outcomes this step reacts to were committed (monotonic): for the dispatch latency.
    since: float | None = None

    def node(self, run: Run, node: NodeRun) -> None:
        self.nodes[(run.run_id, node.name)] = (run, node)
        self.runs[run.run_id] = run


@dataclass(slots=True)
class DispatchStats:
    """Dispatch latencies (an outcome committed -> the next node's task published), in seconds."""

    latencies_s: list[float] = field(default_factory=list)
    dispatched: int = 0

    def add(self, seconds: float, count: int) -> None:
        """One sample per task dispatched (a step that dispatched many weighs as many)."""
        self.dispatched += count
        if len(self.latencies_s) < 1_000_000:
            self.latencies_s.extend([seconds] * count)


class WorkflowEngine:
    """Registers workflows and runs them; one per coordinator (`coordinator.workflows`)."""

    def __init__(
        self,
        *,
        store: WorkflowStore,
        writer: TaskWriter,
        pipeline: SubmitPipeline,
        book: TaskBook,
        admission: Admission,
        operations: TaskOperations,
        catalog: SkillCatalog,
        online_skills: Callable[[], set[str]],
        clock: Clock,
    ) -> None:
        self._store = store
        self._writer = writer
        self._pipeline = pipeline
        self._book = book
        self._admission = admission
        self._operations = operations
        self._catalog = catalog
        self._online_skills = online_skills
        self._clock = clock
        self._runs: dict[str, Run] = {}
        self._tasks: dict[str, tuple[str, str, int]] = {}  # task id -> (run, node, item)
        self._expected_at: dict[str, float] = {}  # task id -> since when (monotonic)
        self._flows: dict[tuple[str, int], CompiledWorkflow] = {}
        self._lock = asyncio.Lock()
        self._loaded = asyncio.Event()
        self._ended_at: dict[str, float] = {}
        # Starts waiting to be committed (`_begin`).
        self._starting: list[tuple[Run, asyncio.Future[bool]]] = []
        self.stats = DispatchStats()

    # --- registration -----------------------------------------------------------------------------

    def skill_info(self, name: str) -> SkillInfo | None:
        """What validation knows of a skill: enabled manifest, or offered by an online worker's code."""
        entry = self._catalog.enabled(name)
        if entry is not None:
            return SkillInfo(entry.manifest, tuple(e.version for e in self._catalog.versions(name)))
        if name in self._online_skills():
            return SkillInfo(None)
        return None

    def validate(self, text: str, source: str = "") -> CompiledWorkflow:
        """Parse and validate a spec against the skills known now."""
        return compile_workflow(parse_spec(text, source=source or "the workflow"), self.skill_info)

    async def register(self, text: str, *, source: str = "", by: str | None = None) -> api.WorkflowRegisterReply:
        """Register a new version of a workflow (none when the spec equals the latest version)."""
        flow = self.validate(text, source)
        canonical = _json.encode(flow.spec)
        digest = hashlib.sha256(canonical).hexdigest()
        async with self._lock:
            latest = await self._store.latest_spec(flow.name, None)
            if latest is not None and latest["digest"] == digest:
                return api.WorkflowRegisterReply(
                    name=flow.name, version=latest["version"], order=flow.order, unchanged=True
                )
            version = 1 if latest is None else latest["version"] + 1
            now = self._clock.now()
            batch = WriteBatch()
            batch.statements.append((sql.INSERT_WORKFLOW, [(flow.name, version, canonical.decode(), digest, now, by)]))
            batch.events.append(
                EventRecord.of(
                    EventKind.WORKFLOW_REGISTERED,
                    f"workflow:{flow.name}",
                    now,
                    data={"version": version, "digest": digest, "by": by, "nodes": len(flow.order)},
                )
            )
            await self._writer.write_batch(batch)
            self._flows[(flow.name, version)] = flow
        log.info("workflow.registered", workflow=flow.name, version=version, by=by)
        return api.WorkflowRegisterReply(name=flow.name, version=version, order=flow.order)

    async def flow(self, name: str, version: int | None) -> tuple[CompiledWorkflow, int]:
        """A registered workflow (its latest version when `version` is None), compiled."""
        if version is not None and (name, version) in self._flows:
            return self._flows[(name, version)], version
        row = await self._store.latest_spec(name, version)
        if row is None:
            what = f"workflow '{name}'" + ("" if version is None else f" version {version}")
            raise WorkflowNotFoundError(f"no {what} is registered; `claw workflow list` shows them")
        key = (name, int(row["version"]))
        if key not in self._flows:
            # Validated at register time: the skills need not be online now (a restart, a worker
            # still connecting); admission checks each task's input when it is submitted.
            self._flows[key] = compile_workflow(parse_spec(row["spec"]), lambda skill: SkillInfo(None))
        return self._flows[key], key[1]

    # --- starting runs ----------------------------------------------------------------------------

    async def start_run(
        self,
        name: str,
        input: Mapping[str, Any] | None,
        *,
        version: int | None = None,
        run_id: str | None = None,
        trigger: str | None = None,
        submitter: str | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> str:
        """Start a run of `name` and return its id; with a `run_id` that exists, return it (no new run)."""
        run, _ = await self._start(
            name, input, version=version, run_id=run_id, trigger=trigger, submitter=submitter, tenant=tenant
        )
        return run

    async def _start(
        self,
        name: str,
        input: Mapping[str, Any] | None,
        *,
        version: int | None,
        run_id: str | None,
        trigger: str | None,
        submitter: str | None,
        tenant: str = DEFAULT_TENANT,
        reuse: Run | None = None,
        from_node: str | None = None,
    ) -> tuple[str, bool]:
        await self._loaded.wait()
        if run_id is not None:
            _check_run_id(run_id)
            if run_id in self._runs or await self._store.run(run_id) is not None:
                return run_id, True
        flow, version = await self.flow(name, version)
        if input is not None and not isinstance(input, Mapping):
            raise InvalidInputError("a workflow's input must be a JSON object")
        now = self._clock.now()
        run = Run(
            run_id=run_id or new_id(),
            name=name,
            version=version,
            flow=flow,
            input={**flow.spec.defaults, **(input or {})},
            created_at=now,
            updated_at=now,
            trigger=trigger,
            submitter=submitter,
            rerun_of=None if reuse is None else reuse.run_id,
            from_node=from_node,
            id_chosen=run_id is not None,
            tenant=tenant,
        )
        span, run.trace_id, run.traceparent = start_task_span(
            "claw.workflow", lambda: {"claw.workflow": name, "claw.run_id": run.run_id}, own_trace=True
        )
        if span is not None:
            span.end()  # the run's root: every node task's span hangs under it
        for node_name in flow.order:
            run.nodes[node_name] = NodeRun(node_name, fan_out=flow.nodes[node_name].for_each is not None)
        if reuse is not None and from_node is not None:
            _reuse_upstream(run, reuse, flow.downstream(from_node), now)
        duplicate = await self._begin(run)
        if not duplicate:
            log.info("workflow.run_started", run_id=run.run_id, workflow=name, version=version, trigger=trigger)
        return run.run_id, duplicate

    async def _begin(self, run: Run) -> bool:
        """Record a new run and start its first nodes; True when its (chosen) id exists already.

        Starts are committed in groups: each waits for the runner's lock, and the first to get it
        records every start waiting by then in one transaction (the others find theirs done), so a
        burst of starts costs a few commits, not one each, and outcomes do not queue behind them.
        """
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._starting.append((run, done))
        step = _Step()
        async with self._lock:
            if not done.done():
                group, self._starting = self._starting, []
                try:
                    await self._begin_group(group, step)
                except Exception as exc:
                    for failed, waiting in group:
                        if self._runs.get(failed.run_id) is failed:
                            self._forget(failed)  # not committed: it does not exist
                        if waiting is not done and not waiting.done():
                            waiting.set_exception(exc)  # the others' starts fail with ours
                    raise
                except asyncio.CancelledError:
                    # Cancelled (the coordinator stopping): the commit may have gone through on the
                    # writer thread, so the runs stay; their starters must not wait for ever.
                    for _, waiting in group:
                        if waiting is not done and not waiting.done():
                            waiting.set_exception(InternalError("the coordinator stopped while starting the run"))
                    raise
        await self._submit(step)  # the group's first node tasks (none for the others)
        return await done

    async def _begin_group(self, group: list[tuple[Run, asyncio.Future[bool]]], step: _Step) -> None:
        taken: set[str] = set()
        started: list[tuple[Run, asyncio.Future[bool]]] = []
        for run, waiting in group:
            chosen_exists = run.id_chosen and await self._store.run(run.run_id) is not None
            if run.run_id in taken or run.run_id in self._runs or chosen_exists:
                waiting.set_result(True)
                continue
            taken.add(run.run_id)
            step.batch.statements.append((sql.INSERT_RUN, [_run_row(run)]))
            data = {"workflow": run.name, "version": run.version, "trigger": run.trigger, "by": run.submitter,
                    "rerun_of": run.rerun_of, "from": run.from_node}  # fmt: skip
            step.batch.events.append(
                EventRecord.of(EventKind.WORKFLOW_RUN_STARTED, f"run:{run.run_id}", run.created_at, data=data)
            )
            for node in run.nodes.values():
                if node.source == "reused":
                    step.node(run, node)
                    step.batch.events.append(_node_event(run, node, EventKind.WORKFLOW_NODE_REUSED, run.created_at))
            self._runs[run.run_id] = run
            await self._advance(run, step)
            started.append((run, waiting))
        await self._commit(step)
        for _, waiting in started:
            waiting.set_result(False)

    async def rerun(
        self,
        run_id: str,
        from_node: str,
        *,
        input: Mapping[str, Any] | None = None,
        version: int | None = None,
        submitter: str | None = None,
    ) -> str:
        """A new run of the workflow (its latest version unless given) that reuses, by reference, every
        output of the old run upstream of `from_node`, and runs `from_node` and everything after it."""
        await self._loaded.wait()
        old = await self._load_run(run_id)
        flow, _ = await self.flow(old.name, version)
        if from_node not in flow.nodes:
            raise InvalidInputError(
                f"workflow '{old.name}' has no node '{from_node}'; its nodes: {', '.join(flow.order)}"
            )
        new_id_, _ = await self._start(
            old.name,
            old.input if input is None else input,
            version=version,
            run_id=None,
            trigger=f"rerun:{run_id}",
            submitter=submitter,
            tenant=old.tenant,  # the rerun is the same tenant's work (and reuses its outputs)
            reuse=old,
            from_node=from_node,
        )
        return new_id_

    async def cancel(self, run_id: str, *, reason: str, by: str | None) -> None:
        """Cancel a running run: no node starts any more, and its unfinished tasks are cancelled."""
        await self._loaded.wait()
        step = _Step()
        async with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                row = await self._store.run(run_id)
                if row is None:
                    raise WorkflowNotFoundError(f"no workflow run {run_id}; `claw workflow list` shows recent runs")
                raise InvalidInputError(f"run {run_id} already {row['state']}; there is nothing to cancel")
            for node in run.nodes.values():
                if node.state == NodeState.RUNNING:
                    step.cancels.extend(node.task_ids[i] for i in node.inflight)
                if not node.finished:
                    self._finish_node(run, node, NodeState.CANCELLED, step, error=reason or "run cancelled")
            self._finish_run(run, RunState.CANCELLED, step, error=reason or f"cancelled by {by or 'a user'}")
            await self._commit(step)
        await self._submit(step)

    # --- reacting to tasks ------------------------------------------------------------------------

    def mark_ended(self, commit: Committed) -> None:
        """Inline listener: when each node task's outcome was committed (for the dispatch latency)."""
        now = time.monotonic()
        if len(self._ended_at) > 100_000:
            self._ended_at.clear()  # the queued listener dropped commits: these are never read
        for transition in commit.transitions():
            task_id = transition.event.task_id
            if task_id in self._tasks and transition.task.state in TERMINAL_STATES:
                self._ended_at[task_id] = now

    async def on_commits(self, commits: Sequence[Committed]) -> None:
        """After-commit listener: fold the outcomes of node tasks, then start what they unblock."""
        ended: dict[str, str] = {}
        for commit in commits:
            for transition in commit.transitions():
                task_id = transition.event.task_id
                if task_id in self._tasks and transition.task.state in TERMINAL_STATES:
                    ended[task_id] = transition.task.state.value
        if not ended:
            return
        marks = [self._ended_at.pop(t) for t in ended if t in self._ended_at]
        since = min(marks) if marks else time.monotonic()
        await self._loaded.wait()
        await self._fold(ended, since=since)

    async def _fold(self, ended: Mapping[str, str], *, since: float | None = None) -> None:
        facts = await self._store.tasks(ended, current=True)
        step = _Step(since=since)
        async with self._lock:
            touched: dict[str, Run] = {}
            for task_id in ended:
                where = self._unexpect(task_id)
                if where is None:
                    continue  # folded already (the repair job got there first)
                run = self._runs.get(where[0])
                fact = facts.get(task_id)
                if run is None:
                    continue
                if fact is None:
                    self._expect(task_id, where)  # not readable now: the repair job looks again
                    continue
                self._item_ended(run, run.nodes[where[1]], where[2], fact, step)
                touched[run.run_id] = run
            for run in touched.values():
                await self._advance(run, step)
            await self._commit(step)
        await self._submit(step)

    def _item_ended(self, run: Run, node: NodeRun, item: int, fact: TaskFacts, step: _Step) -> None:
        if TaskState(fact.state) not in TERMINAL_STATES:
            # Not ended after all (a task retried meanwhile): keep waiting for it.
            self._expect(fact.task_id, (run.run_id, node.name, item))
            return
        node.inflight.discard(item)
        if node.finished:
            return  # the node failed or was cancelled already: a late item changes nothing
        node.done[item] = fact.state
        if fact.state == TaskState.SUCCEEDED.value:
            node.outputs[item] = decode_result(fact.result)
            if len(node.done) == node.items and all(s == TaskState.SUCCEEDED.value for s in node.done.values()):
                node.output = [node.outputs[i] for i in range(node.items)] if node.fan_out else node.outputs[0]
                node.output_loaded = True
                self._finish_node(run, node, NodeState.SUCCEEDED, step)
                if node.cache_key is not None:
                    step.batch.statements.append((sql.PUT_CACHE, [(node.cache_key, fact.task_id, self._clock.now())]))
            return
        what = f"item {item}" if node.fan_out else "its task"
        error = f"{what} {fact.task_id} ended {fact.state}" + (f": {fact.error}" if fact.error else "")
        self._fail_node(run, node, error, step)

    # --- the runner's core: what can start now ------------------------------------------------------

    async def _advance(self, run: Run, step: _Step) -> None:
        """Start every node of `run` whose dependencies have ended, fill fan-outs, end the run when done."""
        progressed = True
        while progressed and run.state == RunState.RUNNING:
            progressed = False
            for name in run.flow.order:
                if run.state != RunState.RUNNING:
                    break
                node = run.nodes[name]
                compiled = run.flow.nodes[name]
                if node.state == NodeState.WAITING:
                    if any(not run.nodes[dep].finished for dep in compiled.deps):
                        continue
                    await self._start_node(run, compiled, node, step)
                    progressed = progressed or node.finished
                elif node.state == NodeState.RUNNING:
                    await self._fill(run, compiled, node, step)
                    progressed = progressed or node.finished
        if run.state == RunState.RUNNING and all(n.finished for n in run.nodes.values()):
            failed = [n.name for n in run.nodes.values() if n.state == NodeState.FAILED and not _optional(run, n)]
            if failed:
                self._finish_run(run, RunState.FAILED, step, error=f"node '{failed[0]}' failed")
            else:
                self._finish_run(run, RunState.SUCCEEDED, step)

    async def _start_node(self, run: Run, compiled: CompiledNode, node: NodeRun, step: _Step) -> None:
        blocked = [d for d in compiled.deps if not _usable(run, run.nodes[d])]
        if blocked:
            self._finish_node(run, node, NodeState.SKIPPED, step, error=f"upstream '{blocked[0]}' did not run")
            return
        scope = await self._scope(run, compiled)
        node.started_at = self._clock.now()
        try:
            if compiled.when is not None and not _truthy(compiled.when.evaluate(scope)):
                self._finish_node(run, node, NodeState.SKIPPED, step, error="its condition (when) is false")
                return
            if compiled.for_each is not None:
                node.item_values = _items(compiled, scope)
                node.items = len(node.item_values)
            else:
                node.items = 1
        except ExpressionError as exc:
            self._fail_node(run, node, str(exc), step)
            return
        node.state = NodeState.RUNNING
        step.node(run, node)
        step.batch.events.append(_node_event(run, node, EventKind.WORKFLOW_NODE_STARTED, node.started_at))
        if node.items == 0:
            node.output, node.output_loaded = [], True
            self._finish_node(run, node, NodeState.SUCCEEDED, step)
            return
        if compiled.spec.cache and not node.fan_out and await self._serve_cached(run, compiled, node, scope, step):
            return
        await self._fill(run, compiled, node, step, scope)

    async def _fill(
        self, run: Run, compiled: CompiledNode, node: NodeRun, step: _Step, scope: dict[str, Any] | None = None
    ) -> None:
        """Dispatch the items of a running node that are neither done nor in flight, up to its cap."""
        if node.items is None:
            return
        cap = (compiled.spec.concurrency or node.items) if node.fan_out else 1
        free = cap - len(node.inflight)
        if free <= 0:
            return
        todo = [i for i in range(node.items) if i not in node.done and i not in node.inflight][:free]
        if not todo:
            return
        if scope is None:
            scope = await self._scope(run, compiled)
        if node.fan_out and not node.item_values and compiled.for_each is not None:
            try:
                node.item_values = _items(compiled, scope)  # after a restart
            except ExpressionError as exc:
                self._fail_node(run, node, str(exc), step)
                return
        for item in todo:
            if node.finished:
                return
            self._dispatch(run, compiled, node, item, scope, step)

    def _dispatch(
        self, run: Run, compiled: CompiledNode, node: NodeRun, item: int, scope: dict[str, Any], step: _Step
    ) -> None:
        task_id = run.task_id(node.name, item if node.fan_out else None)
        try:
            if node.fan_out:
                scope = {**scope, "item": node.item_values[item], "index": item}
            record = self._task_record(run, compiled, task_id, compiled.input.render(scope))
        except (ClawError, IndexError) as exc:
            self._fail_node(run, node, f"{'item ' + str(item) + ': ' if node.fan_out else ''}{exc}", step)
            return
        node.task_ids[item] = task_id
        node.inflight.add(item)
        self._expect(task_id, (run.run_id, node.name, item))
        step.records.append(record)

    def _task_record(self, run: Run, compiled: CompiledNode, task_id: str, input: Any) -> TaskRecord:
        """Admit the node's task as an API submit would (skill, schema, guard), under the run's trace."""
        if not isinstance(input, dict):
            raise InvalidInputError(f"the input evaluated to {_type_name(input)}, not an object")
        node = compiled.spec
        retry = node.retry
        spec = TaskSpec(
            skill=compiled.skill,
            input=msgspec.Raw(msgspec.json.encode(input)),
            priority=node.priority,
            timeout_s=node.timeout_s,
            max_attempts=None if retry is None else retry.max_attempts,
            backoff=None
            if retry is None
            else Backoff(base_s=retry.base_s, factor=retry.factor, max_s=retry.max_s, jitter=retry.jitter),
            task_id=task_id,
        )
        [record] = self._admission.admit(SubmitRequest(tasks=[spec], submitter=run.submitter, tenant=run.tenant))
        if node.approval and record.denied is None:
            record.approvals_needed = max(1, record.approvals_needed)
            record.guard_rule = f"workflow {run.name}: approval node {compiled.name}"
        token = otel_context.attach(context_from({"traceparent": run.traceparent} if run.traceparent else None))
        try:
            record.span, record.trace_id, record.traceparent = start_task_span(
                "claw.task",
                lambda: {"claw.task_id": task_id, "claw.skill": compiled.skill, "claw.run_id": run.run_id,
                         "claw.workflow_node": compiled.name},
            )  # fmt: skip
        finally:
            otel_context.detach(token)
        return record

    async def _serve_cached(
        self, run: Run, compiled: CompiledNode, node: NodeRun, scope: dict[str, Any], step: _Step
    ) -> bool:
        """Serve a `cache: true` node from an earlier success of the same skill@version and input."""
        try:
            input = compiled.input.render(scope)
        except ExpressionError:
            return False
        entry = self._catalog.enabled(compiled.skill)
        version = entry.version if entry is not None else "code"
        # Per tenant: another tenant's result is never served (the default tenant's keys are as before).
        owner = "" if run.tenant == DEFAULT_TENANT else f"tenant:{run.tenant}\n"
        key = f"{owner}{compiled.skill}@{version}\n".encode() + _json.encode(input)
        node.cache_key = hashlib.sha256(key).hexdigest()
        task_id = await self._store.cached(node.cache_key)
        if task_id is None:
            return False
        facts = await self._store.tasks([task_id])
        fact = facts.get(task_id)
        if fact is None:
            return False
        node.task_ids[0] = task_id
        node.source = "cached"
        node.cache_key = None
        node.output, node.output_loaded = decode_result(fact.result), True
        self._finish_node(run, node, NodeState.SUCCEEDED, step)
        return True

    async def _scope(self, run: Run, compiled: CompiledNode) -> dict[str, Any]:
        """The document a node's expressions read: the run's input and its dependencies' outputs."""
        nodes: dict[str, Any] = {}
        for dep in compiled.deps:
            upstream = run.nodes[dep]
            if not upstream.output_loaded:
                await self._load_output(upstream)
            nodes[dep] = {"output": upstream.output, "state": upstream.state.value}
        return {"input": run.input, "nodes": nodes}

    async def _load_output(self, node: NodeRun) -> None:
        """Read a finished node's output from its tasks' results (after a restart, or reused)."""
        if node.state != NodeState.SUCCEEDED:
            node.output, node.output_loaded = None, True
            return
        ids = node.ordered_task_ids()
        facts = await self._store.tasks(ids, current=True)
        outputs = [decode_result(facts[i].result) if i in facts else None for i in ids]
        node.output = outputs if node.fan_out else (outputs[0] if outputs else None)
        node.output_loaded = True

    # --- node and run endings -----------------------------------------------------------------------

    def _fail_node(self, run: Run, node: NodeRun, error: str, step: _Step) -> None:
        self._finish_node(run, node, NodeState.FAILED, step, error=error)
        step.cancels.extend(node.task_ids[i] for i in node.inflight)
        if not _optional(run, node):
            self._finish_run(run, RunState.FAILED, step, error=f"node '{node.name}' failed: {error}")

    def _finish_node(self, run: Run, node: NodeRun, state: NodeState, step: _Step, *, error: str | None = None) -> None:
        now = self._clock.now()
        node.state, node.finished_at, node.error = state, now, error
        if state != NodeState.SUCCEEDED:
            node.output, node.output_loaded = None, True
        step.node(run, node)
        kind = {
            NodeState.SUCCEEDED: EventKind.WORKFLOW_NODE_SUCCEEDED,
            NodeState.FAILED: EventKind.WORKFLOW_NODE_FAILED,
            NodeState.SKIPPED: EventKind.WORKFLOW_NODE_SKIPPED,
        }.get(state, EventKind.WORKFLOW_NODE_FAILED)
        step.batch.events.append(_node_event(run, node, kind, now))

    def _finish_run(self, run: Run, state: RunState, step: _Step, *, error: str | None = None) -> None:
        if run.state != RunState.RUNNING:
            return
        now = self._clock.now()
        run.state, run.finished_at, run.updated_at, run.error = state, now, now, error
        step.runs[run.run_id] = run
        for node in run.nodes.values():
            if node.state == NodeState.RUNNING:
                step.cancels.extend(node.task_ids[i] for i in node.inflight)
                self._finish_node(run, node, NodeState.CANCELLED, step, error=f"the run {state.value}")
            elif node.state == NodeState.WAITING:
                self._finish_node(run, node, NodeState.SKIPPED, step, error=f"the run {state.value}")
        kind = {
            RunState.SUCCEEDED: EventKind.WORKFLOW_RUN_SUCCEEDED,
            RunState.FAILED: EventKind.WORKFLOW_RUN_FAILED,
            RunState.CANCELLED: EventKind.WORKFLOW_RUN_CANCELLED,
        }[state]
        step.batch.events.append(EventRecord.of(kind, f"run:{run.run_id}", now, data={"error": error}))
        log.info("workflow.run_finished", run_id=run.run_id, workflow=run.name, state=state.value, error=error)

    # --- writing and submitting -----------------------------------------------------------------------

    async def _commit(self, step: _Step) -> None:
        """Write the step's rows (runs, nodes, events) in one transaction; forget finished runs."""
        now = self._clock.now()
        nodes = [_node_row(run, node) for run, node in step.nodes.values()]
        if nodes:
            step.batch.statements.append((sql.UPSERT_NODE, nodes))
        updated: list[tuple[object, ...]] = []
        for run in step.runs.values():
            run.updated_at = max(run.updated_at, now)
            updated.append((run.state.value, run.updated_at, run.finished_at, run.error, run.run_id))
        if updated:
            step.batch.statements.append((sql.UPDATE_RUN, updated))
        if step.batch:
            await self._writer.write_batch(step.batch)
        for run in step.runs.values():
            if run.state != RunState.RUNNING:
                self._forget(run)

    def _expect(self, task_id: str, where: tuple[str, str, int]) -> None:
        """Wait for a node task's outcome (kept since when, for the repair job)."""
        self._tasks[task_id] = where
        self._expected_at[task_id] = time.monotonic()

    def _unexpect(self, task_id: str) -> tuple[str, str, int] | None:
        self._expected_at.pop(task_id, None)
        return self._tasks.pop(task_id, None)

    def _forget(self, run: Run) -> None:
        self._runs.pop(run.run_id, None)
        for node in run.nodes.values():
            for task_id in node.task_ids.values():
                self._unexpect(task_id)

    async def _submit(self, step: _Step) -> None:
        """Submit the step's node tasks as one request (the same ids again: answered as duplicates)."""
        if step.records:
            try:
                await self._pipeline.submit(step.records)
            except ClawError as exc:
                # Queue full, a database error: the items stay in flight without a task, and the
                # repair job submits them again (same ids).
                log.warning("workflow.submit_failed", tasks=len(step.records), error=str(exc))
            else:
                if step.since is not None:
                    self.stats.add(time.monotonic() - step.since, len(step.records))
        for task_id in step.cancels:
            with contextlib.suppress(ClawError):  # finished meanwhile, or never submitted
                await self._operations.cancel(task_id, reason="its workflow run ended", by="workflows")

    # --- start-up and repair ------------------------------------------------------------------------

    async def repair(self) -> None:
        """Periodic job: load unfinished runs (first time), fold missed outcomes, resubmit what is missing."""
        if not self._loaded.is_set():
            await self._load()
            self._loaded.set()
        # Only what has been expected for a while: an outcome the listener is about to fold, or a
        # submit in flight, is not missing; and a busy runner is not read through every 2 s.
        cutoff = time.monotonic() - REPAIR_INTERVAL_S
        async with self._lock:
            expected = {t: w for t, w in self._tasks.items() if self._expected_at.get(t, 0.0) <= cutoff}
        if not expected:
            return
        facts = await self._store.tasks(expected, current=True)
        ended = {t: f.state for t, f in facts.items() if TaskState(f.state) in TERMINAL_STATES}
        missing = [t for t in expected if t not in facts and self._book.get(t) is None]
        if ended:
            await self._fold(ended)
        if missing:
            step = _Step()
            async with self._lock:
                runs: dict[str, Run] = {}
                for task_id in missing:
                    where = self._unexpect(task_id)
                    run = None if where is None else self._runs.get(where[0])
                    if where is None or run is None:
                        continue
                    run.nodes[where[1]].inflight.discard(where[2])
                    runs[run.run_id] = run
                for run in runs.values():
                    await self._advance(run, step)
                await self._commit(step)
            await self._submit(step)

    async def _load(self) -> None:
        """Rebuild every unfinished run from the database and the states of its tasks."""
        rows = await self._store.unfinished_runs()
        for row in rows:
            try:
                run = await self._run_from_rows(row)
            except ClawError as exc:
                log.error("workflow.load_failed", run_id=row["run_id"], error=str(exc))
                continue
            self._runs[run.run_id] = run
        step = _Step()
        async with self._lock:
            for run in list(self._runs.values()):
                await self._reconcile(run, step)
                await self._advance(run, step)
            await self._commit(step)
        await self._submit(step)
        log.info("workflows.loaded", runs=len(rows))

    async def _reconcile(self, run: Run, step: _Step) -> None:
        """Fold the outcomes of a loaded run's running nodes from their tasks' states."""
        for node in run.nodes.values():
            if node.state != NodeState.RUNNING or node.items is None:
                continue
            ids = {i: run.task_id(node.name, i if node.fan_out else None) for i in range(node.items)}
            facts = await self._store.tasks(ids.values(), current=True)
            for item, task_id in ids.items():
                fact = facts.get(task_id)
                if fact is None:
                    continue  # never submitted: `_fill` dispatches it
                node.task_ids[item] = task_id
                if TaskState(fact.state) in TERMINAL_STATES:
                    self._item_ended(run, node, item, fact, step)
                    if node.finished:
                        break
                else:
                    node.inflight.add(item)
                    self._expect(task_id, (run.run_id, node.name, item))

    async def _load_run(self, run_id: str) -> Run:
        """A run, from memory or the database."""
        run = self._runs.get(run_id)
        if run is not None:
            return run
        row = await self._store.run(run_id)
        if row is None:
            raise WorkflowNotFoundError(f"no workflow run {run_id}; `claw workflow list` shows recent runs")
        return await self._run_from_rows(row)

    async def _run_from_rows(self, row: Any) -> Run:
        flow, version = await self.flow(row["name"], row["version"])
        run = Run(
            run_id=row["run_id"],
            name=row["name"],
            version=version,
            flow=flow,
            input=_decode.decode(row["input"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            state=RunState(row["state"]),
            finished_at=row["finished_at"],
            error=row["error"],
            trigger=row["trigger"],
            submitter=row["submitter"],
            rerun_of=row["rerun_of"],
            from_node=row["from_node"],
            trace_id=row["trace_id"],
            traceparent=row["traceparent"],
            salt=row["salt"],
            tenant=row["tenant"],
        )
        stored = {r["node"]: r for r in await self._store.nodes(run.run_id)}
        for name in flow.order:
            node = NodeRun(name, fan_out=flow.nodes[name].for_each is not None)
            r = stored.get(name)
            if r is not None:
                node.state = NodeState(r["state"])
                node.task_ids = dict(enumerate(_decode.decode(r["task_ids"])))
                node.items, node.source = r["items"], r["source"]
                node.started_at, node.finished_at, node.error = r["started_at"], r["finished_at"], r["error"]
            run.nodes[name] = node
        return run

    # --- reads for the API ---------------------------------------------------------------------------

    def active_runs(self) -> int:
        """How many runs are unfinished."""
        return len(self._runs)

    async def summary(self, run_id: str) -> tuple[str, int, str]:
        """A run's workflow, version and state, without reading its tasks (the answer to a start)."""
        run = self._runs.get(run_id)
        if run is not None:
            return run.name, run.version, run.state.value
        row = await self._store.run(run_id)
        if row is None:
            raise WorkflowNotFoundError(f"no workflow run {run_id}; `claw workflow list` shows recent runs")
        return row["name"], int(row["version"]), row["state"]

    async def view(self, run_id: str) -> api.WorkflowRunView:
        """A run as `claw workflow show` prints it."""
        await self._loaded.wait()
        run = await self._load_run(run_id)
        facts = await self._store.tasks(t for node in run.nodes.values() for t in node.ordered_task_ids())
        return run_view(run, facts)

    async def triggers(self) -> list[tuple[str, int, Trigger]]:
        """(name, latest version, trigger) of every registered workflow that declares a trigger: what
        the schedules feature fires, each fire through `start_run(..., run_id=<fire id>)`."""
        found = []
        for row in await self._store.latest_specs(None):
            spec = parse_spec(row["spec"])
            if spec.trigger is not None:
                found.append((row["name"], int(row["version"]), spec.trigger))
        return found

    async def listing(self, request: api.WorkflowListRequest) -> api.WorkflowListReply:
        """Registered workflows (latest versions) and the newest runs."""
        specs = await self._store.latest_specs(request.name)
        runs = await self._store.runs(name=request.name, state=request.state, limit=request.limit)
        return list_reply(specs, runs)


# --- helpers ------------------------------------------------------------------------------------------


def _check_run_id(run_id: str) -> None:
    if not run_id or len(run_id) > RUN_ID_MAX or not all(c.isalnum() or c in ":._-+" for c in run_id):
        raise InvalidInputError(f"run id '{run_id[:40]}' is not valid: 1-{RUN_ID_MAX} letters, digits and : . _ - +")


def _optional(run: Run, node: NodeRun) -> bool:
    return run.flow.nodes[node.name].spec.optional


def _usable(run: Run, upstream: NodeRun) -> bool:
    """Whether a node may run after `upstream` ended: it succeeded, or failed while optional."""
    return upstream.state == NodeState.SUCCEEDED or (upstream.state == NodeState.FAILED and _optional(run, upstream))


def _items(compiled: CompiledNode, scope: dict[str, Any]) -> list[Any]:
    """The items of a fan-out; anything but a list is an error of the run."""
    assert compiled.for_each is not None
    items = compiled.for_each.evaluate(scope)
    if not isinstance(items, list):
        raise ExpressionError(f"for_each gave {_type_name(items)}, not a list")
    if len(items) > MAX_ITEMS:
        raise ExpressionError(f"for_each gave {len(items)} items, over the limit of {MAX_ITEMS} per node")
    return items


def _truthy(value: Any) -> bool:
    """JMESPath truth: false, null, empty strings, lists and objects are false."""
    return value not in (None, False, "", [], {})


def _type_name(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _reuse_upstream(run: Run, old: Run, rerun: set[str], now: float) -> None:
    """Point every node outside `rerun` that ended well in `old` at old's tasks (by reference)."""
    for name, node in run.nodes.items():
        before = old.nodes.get(name)
        if name in rerun or before is None or before.state not in (NodeState.SUCCEEDED, NodeState.SKIPPED):
            continue
        if before.fan_out != node.fan_out:
            continue
        node.state = before.state
        node.task_ids = dict(before.task_ids)
        node.items = before.items
        node.source = "reused"
        node.started_at = node.finished_at = now
        node.error = before.error
        if before.output_loaded:
            node.output, node.output_loaded = before.output, True


def _run_row(run: Run) -> tuple[object, ...]:
    return (
        run.run_id, run.name, run.version, run.state.value, _json.encode(run.input).decode(), run.trigger,
        run.submitter, run.created_at, run.updated_at, run.finished_at, run.error, run.rerun_of, run.from_node,
        run.trace_id, run.traceparent, run.salt, run.tenant,
    )  # fmt: skip


def _node_row(run: Run, node: NodeRun) -> tuple[object, ...]:
    return (
        run.run_id, node.name, node.state.value, _json.encode(node.ordered_task_ids()).decode(), node.items,
        node.source, node.started_at, node.finished_at, node.error,
    )  # fmt: skip


def _node_event(run: Run, node: NodeRun, kind: EventKind, at: float) -> EventRecord:
    return EventRecord.of(
        kind,
        f"run:{run.run_id}",
        at,
        data={"node": node.name, "items": node.items if node.fan_out else None, "source": node.source,
              "tasks": node.ordered_task_ids() or None, "error": node.error},
    )  # fmt: skip
