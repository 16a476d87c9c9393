"""Workflows: DAGs of skills run durably by the coordinator (issue 13; docs/Workflows.md).

`register(coordinator)` plugs the runner into the coordinator's hooks: an after-commit listener that
reacts to node tasks' outcomes, a periodic job that loads unfinished runs at start and repairs what a
crash or a dropped commit left, and the `workflow_*` API verbs. The runner is `coordinator.workflows`
(`start_run(name, input, *, version=None, run_id=None, trigger=None, submitter=None) -> run id`),
for the schedules feature and anything else that starts runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator.admission import Admission
from coordinator.periodic_jobs import PeriodicJob
from coordinator.workflows.desk import WorkflowDesk
from coordinator.workflows.engine import REPAIR_INTERVAL_S, WorkflowEngine
from coordinator.workflows.store import WorkflowStore

if TYPE_CHECKING:
    from coordinator.service import Coordinator

__all__ = ["WorkflowEngine", "register"]


def register(coordinator: Coordinator) -> None:
    """Build the runner from the coordinator's parts and add its listener, job and API verbs."""
    admission = Admission(
        coordinator.config.coordinator,
        coordinator.clock,
        catalog=coordinator.catalog,
        guard=coordinator.guard,
        advertised=coordinator.registry.advertised,
        online_skills=coordinator.registry.online_skills,
    )
    engine = WorkflowEngine(
        store=WorkflowStore(coordinator.db),
        writer=coordinator.writer,
        pipeline=coordinator.pipeline,
        book=coordinator.book,
        admission=admission,
        operations=coordinator.operations,
        catalog=coordinator.catalog,
        online_skills=coordinator.registry.online_skills,
        clock=coordinator.clock,
    )
    coordinator.workflows = engine
    coordinator.listeners.add_inline("workflow-clock", engine.mark_ended)
    coordinator.listeners.add("workflows", engine.on_commits)
    coordinator.jobs.add(PeriodicJob("workflow-repair", REPAIR_INTERVAL_S, engine.repair))
    coordinator.api_providers.append(WorkflowDesk(engine))
