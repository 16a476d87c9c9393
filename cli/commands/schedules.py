"""`claw schedules list|show|create|delete|pause|resume|trigger`: cron, interval and event schedules.

The coordinator holding the prefix's lease fires them (coordinator/schedules/); each fire starts its
target once, whatever restarts happen around it. docs/Scheduling.md explains the rules.
"""

from __future__ import annotations

import datetime
import getpass
import time
from typing import Annotated

import typer

from cli.context import query
from cli.inputs import read_inputs
from cli.options import JsonFlag
from cli.output import emit_fields, emit_table, fmt_time, shorten
from cli.runner import fail
from common import api, verbs
from common.states import Priority
from communication.api_client import ClawClient

group = typer.Typer(
    help="Schedules: start a workflow or a task on a cron time, an interval, a NATS subject or a new artifact.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The schedule's name, as `claw schedules list` shows it.")]


@group.command("list")
def schedules_list(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Every schedule: what fires it, what it starts, its next fire time, its last fire."""
    query(ctx, _list, render_list, json_out)


async def _list(client: ClawClient) -> list[api.ScheduleView]:
    return (await client.call(verbs.SCHEDULE_LIST, api.ScheduleListRequest())).schedules


def render_list(schedules: list[api.ScheduleView]) -> None:
    """One row per schedule."""
    rows = [
        (s.name, shorten(s.rule, 44), f"{s.target_kind} {s.target}", "paused" if s.paused else "active",
         fmt_when(s.next_fire_at), s.missed, s.fires,
         fmt_time(s.last_fire_at) if s.last_fire_at is not None else "-")
        for s in schedules
    ]  # fmt: skip
    emit_table(
        ["NAME", "RULE", "TARGET", "STATE", "NEXT FIRE", "MISSED", "FIRES", "LAST FIRE"],
        rows,
        empty="no schedules; `claw schedules create --help` makes one",
    )


@group.command("show")
def schedules_show(ctx: typer.Context, name: NameArg, json_out: JsonFlag = False) -> None:
    """One schedule: its rule, its next five fire times and its newest fires."""
    request = api.ScheduleNameRequest(name=name)
    query(ctx, lambda client: client.call(verbs.SCHEDULE_SHOW, request), render_show, json_out)


def fmt_when(epoch: float | None) -> str:
    """A fire time in local time with its zone, and how far off: `2026-03-09 16:30:00 EDT (in 2.3h)`."""
    if epoch is None:
        return "-"
    local = datetime.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    ahead = epoch - time.time()
    if ahead < 0:
        return local
    span = (
        f"{ahead:.0f}s"
        if ahead < 60
        else f"{ahead / 60:.0f}m"
        if ahead < 3600
        else (f"{ahead / 3600:.1f}h" if ahead < 86400 else f"{ahead / 86400:.1f}d")
    )
    return f"{local} (in {span})"


def render_show(reply: api.ScheduleShowReply) -> None:
    """The schedule's fields, then its upcoming fire times and fires."""
    s = reply.schedule
    emit_fields(
        [("name", s.name), ("rule", s.rule), ("target", f"{s.target_kind} {s.target}"),
         ("input", bytes(s.input).decode()), ("state", "paused" if s.paused else "active"),
         ("missed fires", f"{s.missed} (catch up at most {s.max_catchup})"), ("fires", s.fires),
         ("created", f"{fmt_time(s.created_at)} by {s.created_by or '?'}"),
         *([("fired by messages of", ", ".join([s.created_by or "?", *s.trigger_allow]))]
           if s.kind == "subject" else [])]
    )  # fmt: skip
    if reply.upcoming:
        print("\nnext fires: " + ", ".join(fmt_when(t) for t in reply.upcoming))
    print()
    rows = [(f.fire_id, f.reason, fmt_time(f.fired_at), f.by or "-", f.target_id or "-", shorten(f.error or "", 50))
            for f in reply.fires]  # fmt: skip
    emit_table(["FIRE", "REASON", "FIRED", "BY", "TASK / RUN", "ERROR"], rows, empty="no fires yet")


@group.command("create")
def schedules_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name: letters, digits, '.', '_', '-' (64 at most).")],
    cron: Annotated[
        str | None, typer.Option("--cron", help="A cron expression, e.g. '30 16 * * 1-5' (weekdays 16:30).")
    ] = None,
    tz: Annotated[str, typer.Option("--tz", help="The time zone of --cron (IANA name).")] = "UTC",
    every: Annotated[str | None, typer.Option("--every", help="An interval: 30s, 10m, 1h30m, 1d.")] = None,
    on_subject: Annotated[
        str | None,
        typer.Option(
            "--on-subject",
            help="Fire on each message on <prefix>.trigger.<publisher>.SUBJECT (wildcards * and >) whose publisher "
            "may fire it (you, and --allow-trigger).",
        ),
    ] = None,
    allow_trigger: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-trigger",
            metavar="<identity|role:ROLE>",
            help="With --on-subject: who else may fire it by a message (an identity, or role:operator ...); repeat.",
        ),
    ] = None,
    on_artifact: Annotated[
        str | None, typer.Option("--on-artifact", help="Fire on each new artifact whose name starts with this.")
    ] = None,
    on_event: Annotated[
        bool, typer.Option("--on-event", help="Fire only by hand or by webhook (the schedule_event verb).")
    ] = False,
    workflow: Annotated[str | None, typer.Option("--workflow", help="Start a run of this workflow.")] = None,
    workflow_version: Annotated[int | None, typer.Option("--workflow-version", help="That version of it.")] = None,
    skill: Annotated[str | None, typer.Option("--skill", help="Submit a task of this skill.")] = None,
    input: Annotated[
        str | None, typer.Option("--input", "-i", metavar="<json>", help="The input, a JSON object.", show_default="{}")
    ] = None,
    priority: Annotated[Priority, typer.Option(help="The tasks' priority.")] = Priority.NORMAL,
    missed: Annotated[
        str, typer.Option("--missed", help="Fire times missed while no coordinator ran: skip, once or all.")
    ] = "skip",
    max_catchup: Annotated[
        int, typer.Option("--max-catchup", help="With --missed all: at most this many missed fires.", min=0, max=1000)
    ] = 10,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", metavar="<name>", help="Whose tasks and runs its fires start (default: default)."),
    ] = None,
    allow_unknown_skill: Annotated[
        bool,
        typer.Option("--allow-unknown-skill", help="Accept a --skill no worker offers yet (one will bring it later)."),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Make a schedule. Exactly one of --cron, --every, --on-subject, --on-artifact, --on-event, and one of
    --workflow, --skill."""

    async def create(client: ClawClient) -> api.ScheduleView:
        # Here, not at the top: the coordinator's package is imported only by the command that needs it.
        from coordinator.schedules.timing import parse_duration

        request = api.ScheduleCreateRequest(
            name=name,
            cron=cron,
            tz=tz,
            every_s=None if every is None else parse_duration(every),
            on_subject=on_subject,
            on_artifact=on_artifact,
            on_event=on_event,
            workflow=workflow,
            workflow_version=workflow_version,
            skill=skill,
            input=read_inputs(input, None)[0],
            priority=priority,
            missed=missed,
            max_catchup=max_catchup,
            paused=paused,
            by=getpass.getuser(),
            tenant=tenant,
            trigger_allow=allow_trigger or [],
            allow_unknown_skill=allow_unknown_skill,
        )
        return await client.call(verbs.SCHEDULE_CREATE, request)

    query(ctx, create, lambda view: _said("created", view), json_out)


def _said(what: str, view: api.ScheduleView) -> None:
    state = "paused" if view.paused else "active"
    nxt = f"; next fire {fmt_when(view.next_fire_at)}" if view.next_fire_at is not None else ""
    print(f"{what} schedule {view.name}: {view.rule} -> {view.target_kind} {view.target} ({state}{nxt})")


@group.command("delete")
def schedules_delete(ctx: typer.Context, name: NameArg, json_out: JsonFlag = False) -> None:
    """Remove a schedule (its fire history stays)."""
    query(ctx, lambda client: _named(client, verbs.SCHEDULE_DELETE, name), lambda v: _said("deleted", v), json_out)


@group.command("pause")
def schedules_pause(ctx: typer.Context, name: NameArg, json_out: JsonFlag = False) -> None:
    """Stop a schedule firing; fire times while paused are not made up later."""
    query(ctx, lambda client: _named(client, verbs.SCHEDULE_PAUSE, name), lambda v: _said("paused", v), json_out)


@group.command("resume")
def schedules_resume(ctx: typer.Context, name: NameArg, json_out: JsonFlag = False) -> None:
    """Let a paused schedule fire again, from its first fire time after now."""
    query(ctx, lambda client: _named(client, verbs.SCHEDULE_RESUME, name), lambda v: _said("resumed", v), json_out)


async def _named(
    client: ClawClient, verb: verbs.Verb[api.ScheduleNameRequest, api.ScheduleView], name: str
) -> api.ScheduleView:
    return await client.call(verb, api.ScheduleNameRequest(name=name, by=getpass.getuser()))


@group.command("trigger")
def schedules_trigger(
    ctx: typer.Context,
    name: NameArg,
    key: Annotated[
        str | None, typer.Option("--key", help="Fire once per key: running the command again with it fires nothing.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Fire a schedule now, by hand (also a paused one): starts its target once."""
    request = api.ScheduleTriggerRequest(name=name, key=key, by=getpass.getuser())
    query(ctx, lambda client: client.call(verbs.SCHEDULE_TRIGGER, request), render_fire, json_out)


def render_fire(reply: api.ScheduleFireReply) -> None:
    """What a trigger started."""
    fire = reply.fire
    if fire.error:
        print(f"fired {fire.fire_id}, but its target refused: {fire.error}")
    elif fire.duplicate:
        print(f"{fire.fire_id} had fired already (at {fmt_time(fire.fired_at)}): {fire.target_id}")
    else:
        print(f"fired {fire.fire_id}: {fire.target_id}")


@group.command("publish")
def schedules_publish(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(help="The subject, as --on-subject takes it (e.g. material.new).")],
    data: Annotated[
        str | None, typer.Option("--data", "-d", metavar="<json>", help="The message (JSON).", show_default="null")
    ] = None,
    msg_id: Annotated[
        str | None, typer.Option("--msg-id", help="A retried publish with the same id is stored once.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Publish a trigger message under your identity (<prefix>.trigger.<you>.SUBJECT): it fires the
    --on-subject schedules that match and that you may fire (yours, or those that --allow-trigger you)."""
    import msgspec

    from common.errors import InvalidInputError
    from coordinator.schedules.engine import check_subject

    if "*" in subject or ">" in subject:
        fail(f"a trigger message goes to one subject, '{subject}' has a wildcard: name it whole", kind="usage")
    try:
        check_subject(subject)
    except InvalidInputError as exc:
        fail(str(exc), kind="usage")
    try:
        body = None if data is None else msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        fail(f'--data is not JSON ({exc}): give a JSON value, e.g. \'{{"path": "a.csv"}}\'', kind="usage")

    async def publish(client: ClawClient) -> dict[str, object]:
        seq = await client.publish_trigger(subject, body, msg_id=msg_id)
        return {"subject": client.conn.subjects.trigger(client.conn.identity, subject), "seq": seq}

    query(ctx, publish, lambda r: print(f"published on {r['subject']} (stream sequence {r['seq']})"), json_out)


def register(app: typer.Typer) -> None:
    """Add `claw schedules ...`."""
    app.add_typer(group, name="schedules")
