"""`claw limits list|set|delete`, `claw usage` and `claw attention`: flow control (docs/Flow_control.md)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from cli.context import query
from cli.inputs import parse_duration
from cli.options import JsonFlag
from cli.output import emit_table, fmt_time, shorten
from cli.runner import fail
from common import verbs
from common.api import (
    Empty,
    LimitsDeleteRequest,
    LimitsListRequest,
    LimitsReply,
    LimitsSetRequest,
    LimitView,
    UsageReply,
    UsageRequest,
)
from common.errors import ClawError
from common.flow import Limit, check_key
from common.models import TaskView
from common.states import TaskState
from communication.api_client import ClawClient
from storage.flow_store import GROUPS

group = typer.Typer(help="Limits per key: requests, tokens and concurrency, cluster-wide.", no_args_is_help=True)


@group.command("list")
def limits_list(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Each key's limit and live use: in flight, requests and tokens in the last minute, waiting, cooldown."""
    query(ctx, lambda client: client.call(verbs.LIMITS_LIST, LimitsListRequest()), render_limits, json_out)


@group.command("set")
def limits_set(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key, e.g. llm:glm-4.7 or http:api.example.com.")],
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute.")] = None,
    rps: Annotated[int | None, typer.Option("--rps", min=1, help="Requests per second.")] = None,
    rph: Annotated[int | None, typer.Option("--rph", min=1, help="Requests per hour.")] = None,
    requests: Annotated[int | None, typer.Option("--requests", min=1, help="Requests per --per window.")] = None,
    per: Annotated[
        str | None, typer.Option("--per", metavar="<duration>", help="The window of --requests, e.g. 10s, 5m.")
    ] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", min=1, help="Tokens per minute.")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, help="Requests at once.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Set a key's limit (replacing its old one); every worker follows it from the next start."""
    rates = [(n, w) for n, w in ((rps, 1.0), (rpm, 60.0), (rph, 3600.0)) if n is not None]
    if (requests is None) != (per is None):
        fail("--requests and --per go together (e.g. --requests 30 --per 10s)", kind="usage")
    if requests is not None and per is not None:
        try:
            rates.append((requests, parse_duration(per)))
        except ClawError as exc:
            fail(str(exc), kind=exc.code)
    if len(rates) > 1:
        fail("give one of --rps, --rpm, --rph, --requests/--per", kind="usage")
    if not rates and tpm is None and concurrency is None:
        fail("give at least one of --rpm/--rps/--rph, --tpm, --concurrency", kind="usage")
    try:
        check_key(key)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    requests, window_s = rates[0] if rates else (None, 60.0)
    limit = Limit(key=key, requests=requests, window_s=window_s, tokens_per_minute=tpm, concurrency=concurrency)
    query(
        ctx,
        lambda client: client.call(verbs.LIMITS_SET, LimitsSetRequest(limit=limit)),
        lambda reply: print(f"limit {key}: {limit.describe()}"),
        json_out,
    )


@group.command("delete")
def limits_delete(
    ctx: typer.Context, key: Annotated[str, typer.Argument(help="The key.")], json_out: JsonFlag = False
) -> None:
    """Remove a key's limit."""
    query(
        ctx,
        lambda client: client.call(verbs.LIMITS_DELETE, LimitsDeleteRequest(key=key)),
        lambda reply: print(f"limit {key} removed"),
        json_out,
    )


def render_limits(reply: LimitsReply) -> None:
    """`claw limits list`."""
    emit_table(
        ["KEY", "LIMIT", "IN FLIGHT", "REQ/MIN", "TOKENS/MIN", "WAITING", "COOLDOWN", "BREAKER"],
        [_row(v) for v in reply.limits],
        empty="no limits set and no key in use (claw limits set KEY --rpm N --concurrency N)",
    )


def _row(view: LimitView) -> tuple[object, ...]:
    cooldown = f"{view.cooldown_s:.1f}s ({view.cooldown_reason})" if view.cooldown_s > 0 else "-"
    breaker = view.breaker if view.breaker == "closed" else f"{view.breaker} ({view.consecutive_failures} failures)"
    return (
        view.key,
        view.limit.describe() if view.limit is not None else "-",
        view.in_flight,
        view.requests_last_minute,
        view.tokens_last_minute,
        view.waiting,
        cooldown,
        breaker,
    )


def usage(
    ctx: typer.Context,
    by: Annotated[
        str, typer.Option(metavar="<fields>", help=f"Group by these, comma-separated: {', '.join(GROUPS)}.")
    ] = "tenant,skill,model",
    since: Annotated[str, typer.Option(metavar="<duration>", help="How far back, e.g. 1h, 24h, 7d.")] = "24h",
    json_out: JsonFlag = False,
) -> None:
    """Usage per tenant, skill, model (and hour): calls, errors by reason, tokens, cache hits, cost."""
    fields = [f.strip() for f in by.split(",") if f.strip()]
    unknown = [f for f in fields if f not in GROUPS]
    if unknown:
        fail(f"--by {','.join(unknown)}: group by any of {', '.join(GROUPS)}", kind="usage")
    try:
        since_s = parse_duration(since)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    query(
        ctx,
        lambda client: client.call(verbs.USAGE, UsageRequest(by=fields, since_s=since_s)),
        lambda reply: render_usage(reply, fields),
        json_out,
    )


def render_usage(reply: UsageReply, fields: list[str]) -> None:
    """`claw usage`."""
    heads = [f.upper() for f in fields]
    rows = []
    for row in reply.rows:
        keys = [fmt_time(row.hour) if f == "hour" else getattr(row, f) or "-" for f in fields]
        errors = ", ".join(f"{k} {n}" for k, n in sorted(row.errors.items())) or "-"
        rows.append((*keys, row.calls, errors, row.input_tokens, row.output_tokens, row.cache_hits, f"{row.cost:.4f}"))
    emit_table(
        [*heads, "CALLS", "ERRORS", "IN TOKENS", "OUT TOKENS", "CACHE HITS", "COST"],
        rows,
        empty=f"no usage since {fmt_time(reply.since or time.time())}",
    )


cache_group = typer.Typer(help="The response cache of LLM calls (opt-in per skill or task).", no_args_is_help=True)


@cache_group.command("stats")
def cache_stats(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Entries and size of the response cache, and its hits in the last 24 h."""
    query(
        ctx,
        lambda client: client.call(verbs.CACHE_STATS, Empty()),
        lambda r: print(f"{r.entries} cached answers ({r.bytes} bytes, bucket {r.bucket}); {r.hits_24h} hits in 24 h"),
        json_out,
    )


@cache_group.command("clear")
def cache_clear(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Drop every cached answer."""
    query(
        ctx,
        lambda client: client.call(verbs.CACHE_CLEAR, Empty()),
        lambda r: print(f"cleared {r.cleared} cached answers"),
        json_out,
    )


def register(app: typer.Typer) -> None:
    """Add `claw limits ...`, `claw usage`, `claw attention` and `claw cache ...`."""
    app.add_typer(group, name="limits")
    app.add_typer(cache_group, name="cache")
    app.command("usage")(usage)
    app.command("attention")(attention)


def attention(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    json_out: JsonFlag = False,
) -> None:
    """Tasks that need a person (`needs_input`): they failed for a reason retrying cannot fix.

    Act with `claw task retry ID` once the cause is fixed, or `claw task cancel ID`."""

    async def fetch(client: ClawClient) -> list[TaskView]:
        tasks = await client.list_tasks(state=TaskState.NEEDS_INPUT, limit=limit)
        return [await client.get_task(t.task_id, history=False) for t in tasks]

    query(ctx, fetch, render_attention, json_out)


def render_attention(tasks: list[TaskView]) -> None:
    """`claw attention`."""
    emit_table(
        ["TASK", "SKILL", "SINCE", "ATTEMPTS", "REASON"],
        [(t.task_id, t.skill, fmt_time(t.finished_at), t.attempts, shorten(t.error_message or "", 80)) for t in tasks],
        empty="nothing needs a person",
    )
