"""Tenants (issue 12, item 8): every task belongs to a tenant; quotas per tenant; weighted fair share.

- `identity.py`: the one function that decides a submit's tenant (from the request now, from the
  caller's credentials once they exist);
- `quotas.py`: `max_queued`, checked at submit (the request is refused whole, nothing stored);
- `fair_queue.py`: weighted fair queueing between tenants (pure);
- `dispatcher.py`: with `tenants.fair_share`, the coordinator holds back tasks of tenants over their
  share and publishes them in weighted turns; enforces `max_running`.

`register(coordinator)` plugs them into the submit pipeline (its gates), an after-commit listener
and a periodic job. docs/Flow_control.md ("Tenants") is the user's view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.errors import ConfigError
from coordinator.periodic_jobs import PeriodicJob
from coordinator.tenants.dispatcher import FairDispatcher
from coordinator.tenants.identity import TENANT_PATTERN
from coordinator.tenants.quotas import TenantQuotas

if TYPE_CHECKING:
    from coordinator.service import Coordinator

# How often the dispatcher forgets what it missed and dispatches without a commit to react to.
DISPATCH_TICK_S = 1.0


def register(coordinator: Coordinator) -> None:
    """Add the tenant quotas to the submit pipeline; with fair share, the dispatcher too."""
    settings = coordinator.config.tenants
    bad = [name for name in settings.quotas if not TENANT_PATTERN.match(name)]
    if bad:
        raise ConfigError(
            f"tenants.quotas: {', '.join(map(repr, bad))} is not a tenant name (1 to 64 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit): no submit could ever use it"
        )
    if not settings.fair_share:
        capped = [name for name, quota in settings.quotas.items() if quota.max_running is not None]
        if settings.default_quota.max_running is not None:
            capped.insert(0, "default_quota")
        if capped:
            raise ConfigError(
                f"tenants: max_running ({', '.join(capped)}) is enforced by the fair-share dispatcher: "
                "set tenants.fair_share: true, or remove max_running"
            )
    coordinator.pipeline.gates.append(TenantQuotas(settings, coordinator.book))
    if settings.fair_share:
        dispatcher = FairDispatcher(settings, coordinator.book, coordinator.pipeline)
        coordinator.pipeline.gates.append(dispatcher)
        coordinator.listeners.add("tenant-dispatch", dispatcher.on_commits)
        coordinator.jobs.add(PeriodicJob("tenant-dispatch", DISPATCH_TICK_S, dispatcher.tick))
