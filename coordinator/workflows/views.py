"""How runs and workflows read for people and programs: the replies of `workflow show` and `list`."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from common import api
from common.states import TERMINAL_STATES, TaskState
from coordinator.workflows.runs import NODE_DONE, NodeRun, NodeState, Run, decode_result
from coordinator.workflows.spec import Trigger, parse_spec
from coordinator.workflows.store import TaskFacts
from coordinator.workflows.validate import CompiledNode

_json = msgspec.json.Encoder(order="sorted")


def run_view(run: Run, facts: Mapping[str, TaskFacts]) -> api.WorkflowRunView:
    """A run and its nodes in dependency order, with what its tasks' rows say."""
    return api.WorkflowRunView(
        run_id=run.run_id,
        name=run.name,
        version=run.version,
        state=run.state.value,
        input=msgspec.Raw(msgspec.json.encode(run.input)),
        created_at=run.created_at,
        updated_at=run.updated_at,
        finished_at=run.finished_at,
        error=run.error,
        rerun_of=run.rerun_of,
        from_node=run.from_node,
        trigger=run.trigger,
        submitter=run.submitter,
        trace_id=run.trace_id,
        tenant=run.tenant,
        nodes=[_node_view(run, run.flow.nodes[name], run.nodes[name], facts) for name in run.flow.order],
    )


def list_reply(specs: Sequence[sqlite3.Row], runs: Sequence[sqlite3.Row]) -> api.WorkflowListReply:
    """`workflow list`: the latest version of each workflow, and runs newest first."""
    workflows = []
    for row in specs:
        spec = parse_spec(row["spec"])
        workflows.append(
            api.WorkflowSummary(
                name=row["name"],
                version=row["version"],
                nodes=len(spec.nodes),
                registered_at=row["registered_at"],
                trigger=trigger_text(spec.trigger),
                description=spec.description,
            )
        )
    return api.WorkflowListReply(
        workflows=workflows,
        runs=[
            api.WorkflowRunSummary(
                run_id=r["run_id"],
                name=r["name"],
                version=r["version"],
                state=r["state"],
                created_at=r["created_at"],
                finished_at=r["finished_at"],
                error=r["error"],
            )
            for r in runs
        ],
    )


def trigger_text(trigger: Trigger | None) -> str | None:
    """A trigger in a few words (`cron 30 16 * * 1-5 (America/New_York)`), None for none."""
    if trigger is None:
        return None
    for name in ("cron", "interval_s", "subject", "artifact_prefix", "webhook"):
        value = getattr(trigger, name)
        if value is not None:
            return f"{name} {value}" + (f" ({trigger.timezone})" if name == "cron" else "")
    return None


def _summary(value: Any, limit: int = 80) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        text = "{" + ", ".join(str(k) for k in list(value)[:8]) + (", ..." if len(value) > 8 else "") + "}"
    elif isinstance(value, list):
        text = f"[{len(value)} items]"
    else:
        text = _json.encode(value).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _node_view(run: Run, compiled: CompiledNode, node: NodeRun, facts: Mapping[str, TaskFacts]) -> api.WorkflowNodeView:
    ids = node.ordered_task_ids()
    known = [facts[t] for t in ids if t in facts]
    states = [f.state for f in known]
    waits: list[str] = []
    if node.state == NodeState.WAITING:
        waits = [d for d in compiled.deps if run.nodes[d].state not in NODE_DONE]
    elif node.state == NodeState.RUNNING and TaskState.WAITING_APPROVAL.value in states:
        waits = ["approval"]
    summary = ""
    if node.state == NodeState.SUCCEEDED:
        if node.fan_out:
            summary = f"[{len(ids)} items]"
        elif known:
            summary = _summary(decode_result(known[0].result))
    started, finished = node.started_at, node.finished_at
    return api.WorkflowNodeView(
        name=node.name,
        skill=compiled.skill,
        state=node.state.value,
        needs=list(compiled.deps),
        task_ids=ids,
        task_states=states,
        items=node.items if node.fan_out else None,
        items_done=sum(1 for s in states if TaskState(s) in TERMINAL_STATES),
        attempts=sum(f.attempts for f in known),
        source=node.source,
        started_at=started,
        finished_at=finished,
        duration_s=None if started is None or finished is None else max(finished - started, 0.0),
        error=node.error,
        output_summary=summary,
        waits_for=waits,
    )
