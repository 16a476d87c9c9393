"""Usage accounting: per tenant, skill, model and hour - calls, errors by reason, tokens, cache hits
and an estimated cost from `flow.prices`.

Counted from what the coordinator commits (an after-commit listener, no I/O): each attempt's outcome
is a call (`succeeded`, `retrying`, `failed`, `dead`), its error's reason is counted, and each `usage`
row (a handler's `ctx.report_usage`, llm.chat's API usage) adds tokens. A job adds what was counted to
`flow_usage` every second; Prometheus counters (when metrics are on) follow the same numbers.
"""

from __future__ import annotations

from collections import Counter as Tallies
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from prometheus_client import CollectorRegistry, Counter

from common.config import FlowSettings
from common.event_kinds import EventKind
from common.flow import failure_reason
from common.states import TaskState
from coordinator.task_book import TaskBook
from storage.commits import Committed
from storage.flow_store import FlowStore
from storage.records import EventRecord

HOUR_S = 3600
CALL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.RETRYING, TaskState.FAILED, TaskState.DEAD})
DEFAULT_TENANT = "default"

Group = tuple[int, str, str, str]  # hour, tenant, skill, model


@dataclass(slots=True)
class Tally:
    """Counts of one group not yet written."""

    calls: int = 0
    errors: Tallies[str] = field(default_factory=Tallies)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_hits: int = 0
    cost: float = 0.0


class UsageCounters:
    """The Prometheus counters of usage (on the coordinator's /metrics when metrics are on)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["tenant", "skill", "model"]
        self.calls = Counter("claw_flow_calls_total", "attempts that ended (calls)", labels, registry=registry)
        self.errors = Counter(
            "claw_flow_errors_total", "attempts that failed, by reason", [*labels, "reason"], registry=registry
        )
        self.tokens = Counter(
            "claw_flow_tokens_total", "tokens reported, by direction", [*labels, "direction"], registry=registry
        )
        self.cache_hits = Counter("claw_flow_cache_hits_total", "answers from the cache", labels, registry=registry)


class UsageBook:
    """Counts usage from commits and writes it to SQLite."""

    def __init__(
        self,
        settings: FlowSettings,
        book: TaskBook,
        store: FlowStore,
        model_of: Callable[[str], str | None],
        counters: UsageCounters | None = None,
    ) -> None:
        self._metrics = counters
        self._settings = settings
        self._book = book
        self._store = store
        # The model of a task holding a permit (the gate's grants); registered before the gate's
        # listener, which forgets a grant at the task's outcome.
        self._model_of = model_of
        self._pending: dict[Group, Tally] = {}

    def on_commit(self, commit: Committed) -> None:
        """Count the calls, errors and tokens of a commit."""
        for event in commit.events:
            if event.kind == EventKind.USAGE:
                self._tokens(event, commit)
            elif event.to_state in CALL_STATES:
                self._call(event, commit)

    def _group(self, event: EventRecord, commit: Committed, model: str | None = None) -> Group:
        task = commit.tasks.get(event.task_id)
        record = self._book.get(event.task_id)
        skill = task.skill if task is not None else (record.skill if record is not None else "")
        # The tenant column comes with tenants (another branch); until then every task is `default`.
        tenant = getattr(record, "tenant", None) or DEFAULT_TENANT
        model = model or self._model_of(event.task_id) or ""
        return int(event.at // HOUR_S), str(tenant), skill, model

    def _call(self, event: EventRecord, commit: Committed) -> None:
        group = self._group(event, commit)
        tally = self._tally(group)
        tally.calls += 1
        if self._metrics is not None:
            self._metrics.calls.labels(*group[1:]).inc()
        if event.to_state != TaskState.SUCCEEDED:
            data = _data(event)
            reason = failure_reason(_str(data.get("error_type")), _str(data.get("message"))).value
            tally.errors[reason] += 1
            if self._metrics is not None:
                self._metrics.errors.labels(*group[1:], reason).inc()

    def _tokens(self, event: EventRecord, commit: Committed) -> None:
        data = _data(event)
        model = _str(data.get("model")) or None
        group = self._group(event, commit, model)
        tally = self._tally(group)
        tokens_in, tokens_out = _int(data.get("input_tokens")), _int(data.get("output_tokens"))
        tally.input_tokens += tokens_in
        tally.output_tokens += tokens_out
        if self._metrics is not None:
            self._metrics.tokens.labels(*group[1:], "input").inc(tokens_in)
            self._metrics.tokens.labels(*group[1:], "output").inc(tokens_out)
        if data.get("cache_hit"):
            tally.cache_hits += 1
            if self._metrics is not None:
                self._metrics.cache_hits.labels(*group[1:]).inc()
        price = self._settings.prices.get(model or "")
        if price is not None:
            tally.cost += (tokens_in * price.input_per_mtok + tokens_out * price.output_per_mtok) / 1e6

    def _tally(self, group: Group) -> Tally:
        found = self._pending.get(group)
        if found is None:
            found = self._pending[group] = Tally()
        return found

    async def flush(self) -> None:
        """Add what was counted to `flow_usage` (a periodic job)."""
        pending, self._pending = self._pending, {}
        rows: list[tuple[object, ...]] = []
        for (hour, tenant, skill, model), tally in pending.items():
            errors = Tallies(await self._store.errors_of(hour, tenant, skill, model)) + tally.errors
            rows.append((hour, tenant, skill, model, tally.calls, msgspec.json.encode(dict(errors)).decode(),
                         tally.input_tokens, tally.output_tokens, tally.cache_hits, tally.cost))  # fmt: skip
        if not rows:
            return
        try:
            await self._store.add_usage(rows)
        except BaseException:
            for group, tally in pending.items():  # counted again with the next flush
                merged = self._tally(group)
                merged.calls += tally.calls
                merged.errors.update(tally.errors)
                merged.input_tokens += tally.input_tokens
                merged.output_tokens += tally.output_tokens
                merged.cache_hits += tally.cache_hits
                merged.cost += tally.cost
            raise


def _data(event: EventRecord) -> dict[str, object]:
    if not event.data:
        return {}
    value = msgspec.json.decode(event.data)
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0
