"""`claw status`: the cluster at a glance."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.context import query
from cli.inputs import parse_duration
from cli.options import JsonFlag
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
from cli.runner import fail
from common.errors import ClawError
from common.models import AlertView, ClusterStatus, JobView, ListenerView, WindowStats


def status(
    ctx: typer.Context,
    window: Annotated[
        str,
        typer.Option(
            metavar="<duration>", help="Rates and run times over the tasks that finished in this window: 15m, 1h, 7d."
        ),
    ] = "1h",
    all_queues: Annotated[
        bool, typer.Option("--all", "-a", help="List every queue, also those with nothing waiting or in flight.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Cluster overview: nodes, queues, tasks by state, recent rates and run times, DLQ, alerts, NATS."""
    try:
        window_s = parse_duration(window)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    if window_s <= 0:
        fail("--window must be longer than 0, e.g. 15m or 1h", kind="usage")
    query(
        ctx,
        lambda client: client.status(window_s=window_s),
        lambda status: render_status(status, all_queues=all_queues),
        json_out,
    )


def render_status(status: ClusterStatus, *, all_queues: bool = False) -> None:
    """`claw status`; queues with nothing waiting or in flight only with `all_queues`."""
    metrics = None if status.metrics_port is None else f":{status.metrics_port}/metrics on the coordinator's host"
    fault = status.storage_fault
    storage = "ok" if fault is None else f"FAULT since {fmt_time(fault.since)}: {fault.reason}; submits are refused"
    emit_fields(
        [
            ("coordinator", f"up (version {status.coordinator_version})"),
            *_replication_fields(status),
            ("state database", storage),
            ("nodes", f"{status.nodes_online} online of {status.nodes_total}"),
            ("tasks", ", ".join(f"{n} {state}" for state, n in status.tasks_by_state.items()) or "none yet"),
            ("dead letters", "?" if status.dlq_messages is None else f"{status.dlq_messages} in the DLQ"),
            ("metrics", metrics or "not served (claw coordinator start --metrics-port)"),
        ]
    )
    if status.window is not None:
        _render_window(status.window)
    _render_alerts(status.alerts)
    _render_queues(status, all_queues)
    _render_hooks(status.jobs, status.listeners)
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


def _render_queues(status: ClusterStatus, all_queues: bool) -> None:
    shown = [q for q in status.queues if all_queues or q.pending or q.ack_pending]
    idle = len(status.queues) - len(shown)
    hidden = f" ({idle} idle hidden; --all lists them)" if idle else ""
    print(f"\nqueues{hidden}:")
    emit_table(
        ["SKILL", "PRIORITY", "WAITING", "IN FLIGHT"],
        [(q.skill, q.priority.value, q.pending, q.ack_pending) for q in shown],
        empty="nothing waiting or in flight" if status.queues else "no queues yet",
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


def _render_hooks(jobs: list[JobView], listeners: list[ListenerView]) -> None:
    """The coordinator's periodic jobs and after-commit listeners (absent from older coordinators)."""
    if jobs:
        print("\ncoordinator jobs:")
        emit_table(
            ["JOB", "EVERY", "LAST RUN", "TOOK", "RUNS", "FAILED", "LAST ERROR"],
            [
                (j.name, fmt_span(j.interval_s), "running" if j.running else fmt_ago(j.last_run_at),
                 fmt_duration(j.last_duration_s), j.runs, j.failures, _last_error(j.last_error, j.last_error_at))
                for j in jobs
            ],
        )  # fmt: skip
    troubled = [x for x in listeners if x.failures or x.dropped]
    if listeners:
        names = ", ".join(f"{x.name} ({'inline' if x.inline else 'queued'})" for x in listeners)
        print(f"\ncommit listeners: {names}" + ("" if troubled else ", none failing"))
    if troubled:
        emit_table(
            ["LISTENER", "CALLS", "FAILED", "DROPPED", "LAST ERROR"],
            [(x.name, x.calls, x.failures, x.dropped, shorten(x.last_error or "-", 60)) for x in troubled],
        )


def _last_error(error: str | None, at: float | None) -> str:
    return "-" if error is None else f"{shorten(error, 60)} ({fmt_ago(at)})"


def register(app: typer.Typer) -> None:
    """Add `claw status`."""
    app.command()(status)


def _replication_fields(status: ClusterStatus) -> list[tuple[str, str]]:
    """`active` and `standbys`: who serves, its epoch, and how far behind each standby is."""
    rep = status.replication
    if rep is None:
        return []  # one coordinator: nothing to say
    lines = [("active", f"{rep.active_node_id}, epoch {rep.epoch}, commit {rep.commit_no}")]
    if not rep.standbys:
        return [*lines, ("standbys", "none reporting: no takeover possible")]
    for i, standby in enumerate(rep.standbys):
        lag = "in step" if standby.lag_commits == 0 else f"{standby.lag_commits} commits behind"
        lines.append(
            (
                "standbys" if i == 0 else "",
                f"{standby.node_id} on {standby.host}: {lag} (commit {standby.commit_no}, "
                f"reported {fmt_ago(standby.reported_at)})",
            )
        )
    return lines
