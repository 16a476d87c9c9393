"""Human-readable views of tasks, nodes and the cluster status."""

from __future__ import annotations

import shlex
import time

import msgspec

from cli.output import (
    emit_fields,
    emit_table,
    fmt_ago,
    fmt_bytes,
    fmt_duration,
    fmt_percent,
    fmt_span,
    fmt_time,
    shorten,
)
from common.api import (
    ApprovalOutcome,
    ApprovalView,
    GuardCheckReply,
    SkillInfo,
    SubmitResult,
    TaskActionReply,
)
from common.models import (
    ARTIFACT_MARKER,
    AlertView,
    ArtifactView,
    ClusterStatus,
    DeadLetterView,
    NodeView,
    TaskSummary,
    TaskView,
    WindowStats,
)
from common.states import NodeControl, NodeStatus


def _since(start: float | None, end: float | None) -> str:
    return "-" if start is None or end is None else fmt_duration(end - start)


def _json_text(raw: msgspec.Raw, limit: int = 2000) -> str:
    text = bytes(raw).decode()
    return "-" if text == "null" else shorten(text, limit)


def _artifact_ref(raw: msgspec.Raw) -> dict[str, object] | None:
    text = bytes(raw)
    if not text.startswith(b'{"' + ARTIFACT_MARKER.encode()):
        return None
    ref = msgspec.json.decode(text).get(ARTIFACT_MARKER)
    return ref if isinstance(ref, dict) else None


def payload_text(raw: msgspec.Raw) -> str:
    """An input or result for a human: its JSON (shortened), or which artifact holds it."""
    ref = _artifact_ref(raw)
    if ref is None:
        return _json_text(raw)
    return f"artifact {ref['name']} ({fmt_bytes(int(str(ref['size'])))}, sha256 {str(ref['sha256'])[:16]})"


def task_summary(task: TaskView) -> list[str]:
    """What happened, where the outputs are, and how to run it again."""
    lines = []
    retries = max(task.attempts - 1, 0)
    ran = _since(task.started_at, task.finished_at)
    waited = _since(task.queued_at, task.started_at)
    where = f" on {task.node_id}" if task.node_id else ""
    tries = f" ({retries} retr{'y' if retries == 1 else 'ies'})" if retries else ""
    if task.state.value in ("succeeded", "failed", "dead"):
        lines.append(
            f"{task.state.value} on attempt {task.attempts} of {task.max_attempts}{where}; "
            f"waited {waited} in the queue, ran {ran}{tries}"
        )
    else:
        lines.append(f"{task.state.value}; {task.attempts} attempt(s) so far{where}")
    for artifact in task.artifacts:
        lines.append(
            f"artifact {artifact.name} ({fmt_bytes(artifact.size)}): "
            f"claw artifacts get {task.task_id} {artifact.name} -o {artifact.name.rsplit('/', 1)[-1]}"
        )
    lines.append(f"reproduce: {reproduce_command(task)}")
    return lines


def reproduce_command(task: TaskView) -> str:
    """A `claw submit` that runs the same task again."""
    ref = _artifact_ref(task.input)
    given = "--input-file input.json" if ref is not None else f"--input {shlex.quote(bytes(task.input).decode())}"
    return (
        f"claw submit {task.skill} {given} --priority {task.priority.value} "
        f"--max-attempts {task.max_attempts} --timeout {task.timeout_s:g}"
    )


def render_task(task: TaskView) -> None:
    """`claw task show`: the record, its attempts and its event timeline."""
    end = task.finished_at
    emit_fields(
        [
            ("task", task.task_id),
            ("skill", f"{task.skill} ({task.priority.value} priority)"),
            ("state", task.state.value),
            ("attempts", f"{task.attempts} of {task.max_attempts}"),
            ("node", task.node_id),
            ("timeout", fmt_duration(task.timeout_s)),
            ("idempotency key", task.idempotency_key),
            ("created", fmt_time(task.created_at)),
            ("queued", f"{fmt_time(task.queued_at)} (+{_since(task.created_at, task.queued_at)})"),
            ("started", f"{fmt_time(task.started_at)} (waited {_since(task.queued_at, task.started_at)})"),
            ("finished", f"{fmt_time(end)} (ran {_since(task.started_at, end)})"),
            ("next attempt", fmt_time(task.next_attempt_at) if task.next_attempt_at else None),
            ("trace", task.trace_id),
            ("input", payload_text(task.input)),
            ("result", payload_text(task.result)),
        ]
    )
    print("\nsummary:")
    for line in task_summary(task):
        print(f"  {line}")
    if task.error_type:
        print(f"\nerror: {task.error_type}: {task.error_message}")
        if task.error_traceback:
            print(task.error_traceback.rstrip())
    if task.attempt_log:
        print("\nattempts:")
        emit_table(
            ["#", "NODE", "STATE", "STARTED", "RAN", "ERROR"],
            [
                (
                    a.attempt,
                    a.node_id,
                    a.state.value,
                    fmt_time(a.started_at),
                    _since(a.started_at, a.finished_at),
                    shorten(f"{a.error_type}: {a.error_message}", 80) if a.error_type else None,
                )
                for a in task.attempt_log
            ],
        )
    if task.events:
        print("\ntimeline:")
        base = task.events[0].at
        emit_table(
            ["TIME", "+", "EVENT", "STATE", "ATTEMPT", "NODE", "DETAIL"],
            [
                (
                    fmt_time(e.at),
                    fmt_duration(e.at - base),
                    e.kind,
                    _transition(e.from_state, e.to_state),
                    e.attempt or None,
                    e.node_id,
                    _json_text(e.data, 80),
                )
                for e in task.events
            ],
        )


def _transition(from_state: object, to_state: object) -> str | None:
    if to_state is None:
        return None
    to_value = getattr(to_state, "value", to_state)
    if from_state is None:
        return f"-> {to_value}"
    return f"{getattr(from_state, 'value', from_state)} -> {to_value}"


def render_task_list(tasks: list[TaskSummary]) -> None:
    """`claw task list`."""
    emit_table(
        ["TASK", "SKILL", "STATE", "PRIORITY", "ATTEMPTS", "NODE", "CREATED", "RAN"],
        [
            (
                t.task_id,
                t.skill,
                t.state.value,
                t.priority.value,
                t.attempts,
                t.node_id,
                fmt_time(t.created_at),
                _since(t.started_at, t.finished_at),
            )
            for t in tasks
        ],
        empty="no tasks",
    )


def render_nodes(nodes: list[NodeView]) -> None:
    """`claw nodes`."""
    now = time.time()
    emit_table(
        [
            "NODE",
            "STATUS",
            "SKILLS",
            "LABELS",
            "RUNNING",
            "CPU",
            "MEM",
            "LOAD",
            "RSS",
            "VERSION",
            "LAST HEARTBEAT",
        ],
        [
            (
                n.node_id,
                node_status_text(n),
                ",".join(n.skills),
                ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())) or None,
                f"{n.running}/{n.capacity}",
                f"{n.cpu_percent:.0f}%",
                f"{n.memory_percent:.0f}%",
                f"{n.load1:.2f}",
                f"{n.rss_mb:.0f} MB",
                n.version,
                fmt_ago(n.last_seen, now=now),
            )
            for n in nodes
        ],
        empty="no nodes have registered; start a worker with `claw worker start`",
    )


# The statuses that show a node does what the coordinator asks of it.
_FOLLOWS = {
    NodeControl.ACTIVE: (NodeStatus.ONLINE,),
    NodeControl.PAUSED: (NodeStatus.PAUSED,),
    NodeControl.DRAINED: (NodeStatus.DRAINING, NodeStatus.DRAINED),
}


def node_status_text(node: NodeView) -> str:
    """The STATUS cell of `claw nodes`: what the node does, and what it was asked when that differs
    (`online -> paused` until it applies a pause; `offline (paused)`: it comes back paused)."""
    status = node.status.value
    if node.status in (NodeStatus.OFFLINE, NodeStatus.STOPPING):
        return status if node.control == NodeControl.ACTIVE else f"{status} ({node.control.value})"
    if node.status in _FOLLOWS[node.control]:
        return status
    return f"{status} -> {node.control.value}"


def render_status(status: ClusterStatus) -> None:
    """`claw status`."""
    metrics = None if status.metrics_port is None else f":{status.metrics_port}/metrics on the coordinator's host"
    emit_fields(
        [
            ("coordinator", f"up (version {status.coordinator_version})"),
            ("nodes", f"{status.nodes_online} online of {status.nodes_total}"),
            ("tasks", ", ".join(f"{n} {state}" for state, n in status.tasks_by_state.items()) or "none yet"),
            ("dead letters", "?" if status.dlq_messages is None else f"{status.dlq_messages} in the DLQ"),
            ("metrics", metrics or "not served (claw coordinator start --metrics-port)"),
        ]
    )
    if status.window is not None:
        _render_window(status.window)
    _render_alerts(status.alerts)
    print("\nqueues:")
    emit_table(
        ["SKILL", "PRIORITY", "WAITING", "IN FLIGHT"],
        [(q.skill, q.priority.value, q.pending, q.ack_pending) for q in status.queues],
        empty="no queues yet",
    )
    nats = status.nats
    print("\nnats:")
    if nats.error and not nats.connections:
        emit_fields([("version", nats.version or "?"), ("monitoring", nats.error)])
        return
    emit_fields(
        [
            ("version", nats.version),
            ("connections", nats.connections),
            ("messages", f"{nats.in_msgs} in, {nats.out_msgs} out"),
            (
                "jetstream",
                f"{nats.jetstream_streams} streams, {nats.jetstream_consumers} consumers, "
                f"{nats.jetstream_messages} messages, {fmt_bytes(nats.jetstream_bytes)} stored",
            ),
            ("monitoring", nats.monitor_url),
        ]
    )


def _render_window(window: WindowStats) -> None:
    print(f"\nlast {fmt_span(window.window_s)}:")
    states = ", ".join(f"{n} {state}" for state, n in window.by_state.items())
    run_time = None
    if window.run_mean_s is not None:
        run_time = f"mean {fmt_duration(window.run_mean_s)}, p95 {fmt_duration(window.run_p95_s)} (succeeded tasks)"
    emit_fields(
        [
            ("finished", f"{window.finished} ({states})" if window.finished else "none"),
            ("completion", fmt_percent(window.completion_rate)),
            ("failure", fmt_percent(window.failure_rate)),
            ("run time", run_time),
        ]
    )


def _render_alerts(alerts: list[AlertView]) -> None:
    if not alerts:
        print("\nalerts: none")
        return
    print("\nalerts:")
    for alert in alerts:
        print(f"  ALERT {alert.name} since {fmt_time(alert.since)}: {alert.message}")


def render_submitted(results: list[SubmitResult], skill: str, priority: str) -> None:
    """`claw submit` without --wait: one line per task."""
    for result in results:
        note = " (duplicate: an earlier task has this idempotency key)" if result.duplicate else ""
        print(f"{result.task_id}  {skill}  {priority}  {result.state.value}{note}")


def render_action(reply: TaskActionReply, verb: str) -> None:
    """`claw task cancel|retry`: what happened."""
    if reply.changed:
        print(f"{reply.task_id} {verb}: now {reply.state.value}")
    else:
        print(f"{reply.task_id} unchanged ({reply.note or reply.state.value})")


def render_dead_letters(views: list[DeadLetterView]) -> None:
    """`claw dlq list`."""
    emit_table(
        ["SEQ", "DEAD AT", "KIND", "SKILL", "TASK", "ATTEMPTS", "REASON"],
        [
            (
                v.seq,
                fmt_time(v.letter.dead_at),
                v.letter.kind,
                v.letter.skill,
                v.letter.task_id,
                len(v.letter.attempts) or None,
                shorten(v.letter.reason, 70),
            )
            for v in views
        ],
        empty="the dead-letter queue is empty",
    )


def render_replays(replies: list[TaskActionReply]) -> None:
    """`claw dlq replay`."""
    if not replies:
        print("nothing to replay")
    for reply in replies:
        render_action(reply, "replayed")


def render_skills(infos: list[SkillInfo]) -> None:
    """`claw skills list|search`."""
    emit_table(
        ["SKILL", "VERSION", "RISK", "ENABLED", "SOURCE", "NODES", "DESCRIPTION"],
        [
            (
                i.entry.name,
                i.entry.version,
                i.entry.manifest.risk.value,
                "yes" if i.entry.enabled else "no",
                i.entry.source,
                len(i.nodes),
                shorten(i.entry.manifest.description, 60),
            )
            for i in infos
        ],
        empty="no skills match",
    )


def render_skill(infos: list[SkillInfo]) -> None:
    """`claw skills show NAME`: every version, and the enabled one's manifest."""
    enabled = next((i for i in infos if i.entry.enabled), infos[-1])
    m = enabled.entry.manifest
    emit_fields(
        [
            ("skill", m.name),
            ("versions", ", ".join(f"{i.entry.version}{' (enabled)' if i.entry.enabled else ''}" for i in infos)),
            ("description", m.description),
            ("risk", m.risk.value),
            ("capabilities", ", ".join(m.capabilities) or None),
            ("runtime", m.runtime.python or " ".join(m.runtime.command or [])),
            ("timeout", fmt_duration(m.timeout_s) if m.timeout_s else None),
            (
                "retry",
                None
                if m.retry is None
                else f"{m.retry.max_attempts} attempts, backoff {m.retry.base_s:g} s x{m.retry.factor:g}",
            ),
            ("requires labels", ", ".join(f"{k}={v}" for k, v in m.requires_labels.items()) or None),
            ("concurrency", m.concurrency),
            ("source", enabled.entry.source),
            ("checksum", enabled.entry.checksum[:16] or None),
            ("installed", fmt_time(enabled.entry.installed_at) if enabled.entry.installed_at else None),
            ("nodes", ", ".join(enabled.nodes) or "none online"),
        ]
    )
    if m.input_schema is not None:
        print("\ninput schema:")
        print(msgspec.json.format(msgspec.json.encode(m.input_schema), indent=2).decode())


def render_approvals(views: list[ApprovalView]) -> None:
    """`claw approvals`."""
    emit_table(
        ["TASK", "SKILL", "RISK", "RULE", "APPROVALS", "SUBMITTER", "WAITING", "EXPIRES", "INPUT"],
        [
            (
                v.task_id,
                v.skill,
                v.risk,
                v.rule,
                f"{len(v.approved_by)}/{v.approvals_needed}"
                + (f" ({', '.join(v.approved_by)})" if v.approved_by else ""),
                v.submitter,
                fmt_ago(v.since),
                fmt_time(v.expires_at),
                shorten(v.input_summary, 50),
            )
            for v in views
        ],
        empty="nothing waits for approval",
    )


def render_approval_outcome(outcome: ApprovalOutcome) -> None:
    """`claw approve|reject`."""
    if outcome.state.value == "waiting_approval":
        print(
            f"{outcome.task_id} approved by {', '.join(outcome.approved_by)}: "
            f"{len(outcome.approved_by)} of {outcome.approvals_needed}, still waiting"
        )
    else:
        print(f"{outcome.task_id} {outcome.state.value}")


def render_guard_check(reply: GuardCheckReply) -> None:
    """`claw guard check`."""
    d = reply.decision
    action = d.action + (f" ({d.approvals} approval{'s' if d.approvals != 1 else ''})" if d.approvals else "")
    print(f"{reply.skill} (risk {reply.risk}): rule '{d.rule}' -> {action}")
    if d.reason:
        print(f"  reason: {d.reason}")
    for line in d.explanation:
        print(f"  because {line}")


def render_artifacts(artifacts: list[ArtifactView]) -> None:
    """`claw artifacts list`."""
    emit_table(
        ["NAME", "ATTEMPT", "SIZE", "TYPE", "SHA256", "CREATED", "EXPIRES"],
        [
            (
                a.name,
                a.attempt or "input",
                fmt_bytes(a.size),
                a.content_type,
                a.sha256[:16],
                fmt_time(a.created_at),
                fmt_time(a.expires_at),
            )
            for a in artifacts
        ],
        empty="this task has no artifacts",
    )
