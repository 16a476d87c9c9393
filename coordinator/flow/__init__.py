"""Flow control (issue 12): limit keys with RPM/TPM/concurrency limits enforced across the cluster,
cooldowns and circuit breakers per key, fallbacks, per-call permits, usage accounting.

`register(coordinator)` puts the gate in front of the submit pipeline's publishing, listens to
commits (permits back at outcomes, failures, usage), adds its periodic jobs and serves its verbs.
docs/Flow_control.md is the user's guide; the modules:

- `keys.py`: which keys a task uses, and its alternatives;
- `ledger.py`: every key's limit and live use, cooldown and breaker;
- `gate.py`: holds tasks without room, publishes them when room appears;
- `desk.py`: the verbs (limits, per-call permits, usage);
- `usage.py`: usage by tenant, skill, model and hour;
- `cache.py`: the response cache's only writer (workers report answers, the coordinator writes them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from communication.response_cache import ResponseCache
from coordinator.flow.cache import CacheDesk
from coordinator.flow.desk import FlowDesk
from coordinator.flow.gate import FlowGate, KeyedHolder
from coordinator.flow.ledger import Ledger
from coordinator.flow.usage import UsageBook, UsageCounters
from coordinator.periodic_jobs import PeriodicJob
from storage.flow_store import FlowStore

if TYPE_CHECKING:
    from coordinator.service import Coordinator

USAGE_FLUSH_INTERVAL_S = 1.0
OFFLINE_CHECK_INTERVAL_S = 0.5


def register(c: Coordinator) -> None:
    """Wire flow control into a coordinator."""
    settings = c.config.flow
    ledger = Ledger(margin_s=settings.rate_margin_s)
    store = FlowStore(c.db)
    gate = FlowGate(settings, ledger, c.book, c.writer, c.conn, c.clock, manifest_keys=lambda s: _manifest_keys(c, s))
    gate.publisher = c.pipeline
    gate.held_before = [g for g in c.pipeline.gates if isinstance(g, KeyedHolder)]
    counters = None if c.metrics is None else UsageCounters(c.metrics.registry)
    usage = UsageBook(settings, c.book, store, lambda task_id: _model(gate, task_id), counters)
    cache = ResponseCache(c.conn, c.clock, writer=c.config.jetstream)
    desk = FlowDesk(gate, ledger, store, usage, c.writer, c.registry, c.clock, list(settings.limits), cache)
    gate.loader = desk.load
    c.pipeline.gate = gate
    c.folder.escalate = gate.escalation
    # Usage first: it reads the model of a grant the gate forgets at the task's outcome.
    c.listeners.add_inline("flow-usage", usage.on_commit)
    c.listeners.add_inline("flow-permits", gate.on_commit)
    c.jobs.add(PeriodicJob("flow-gate", settings.gate_interval_s, gate.pump))
    c.jobs.add(PeriodicJob("flow-usage", USAGE_FLUSH_INTERVAL_S, usage.flush))
    c.jobs.add(PeriodicJob("flow-offline-permits", OFFLINE_CHECK_INTERVAL_S, desk.release_offline, writes=False))
    c.api_providers.append(desk)
    c.api_providers.append(CacheDesk(c.book, cache, c.config.tools.llm_model))


def _manifest_keys(c: Coordinator, skill: str) -> list[str]:
    """The limit key templates the enabled manifest of `skill` declares (`limit_keys`)."""
    entry = c.catalog.enabled(skill)
    return [] if entry is None else list(entry.manifest.limit_keys)


def _model(gate: FlowGate, task_id: str) -> str | None:
    grant = gate.grants.get(task_id)
    return None if grant is None else grant.model
