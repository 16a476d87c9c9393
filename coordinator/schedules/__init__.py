"""Schedules and triggers (issue 13: 4): cron in a time zone, intervals, and event triggers (a NATS
subject, a new artifact, a webhook through `schedule_event`), each fire started once.

`register(coordinator)` plugs the feature into the coordinator's hooks (coordinator/plugins.py):
the engine's API verbs (`claw schedules ...`) and three periodic jobs - time schedules, subject
triggers, artifact triggers. Periodic jobs run only in a coordinator holding the prefix's lease, so
only the lease holder fires. docs/Scheduling.md explains the design and its guarantees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from coordinator.periodic_jobs import PeriodicJob
from coordinator.schedules.engine import ScheduleEngine, Workflows
from coordinator.schedules.triggers import ArtifactTriggers, SubjectTriggers
from coordinator.schedules.workflow_triggers import WorkflowTriggerSync
from storage.schedule_store import ScheduleStore

if TYPE_CHECKING:
    from coordinator.service import Coordinator

# How often due fires are looked for: a fire starts within this of its time. A look scans the
# schedules in memory. Measured (one-second schedule, loaded 2-core machine): fire time -> task
# committed 53 ms median, 169 ms max at 0.1 s; 375 ms median at 0.5 s.
TICK_S = 0.1
# How often trigger messages and new artifacts are looked for.
TRIGGER_POLL_S = 0.25
ARTIFACT_POLL_S = 1.0
# How often the triggers declared in workflow specs are read (a registered workflow fires within this).
WORKFLOW_SYNC_S = 2.0


def register(c: Coordinator) -> None:
    """Add the schedule engine's verbs and periodic jobs to the coordinator."""
    store = ScheduleStore(c.db)

    def workflows() -> Workflows | None:
        return cast("Workflows | None", getattr(c, "workflows", None))

    def skills_offered() -> set[str]:
        # Offered by a worker the coordinator has heard of (alive or not: tasks for it can queue),
        # or installed and enabled (built-in skills among them).
        return c.registry.known_skills() | {e.name for e in c.catalog.entries() if e.enabled}

    engine = ScheduleEngine(
        store, c.clock, submit=lambda request: c.handlers.submit(request), workflows=workflows, writer=c.writer,
        skills_offered=skills_offered,
    )  # fmt: skip
    # Looked up at each use: the coordinator makes its authorizer after the plugins register.
    subject_triggers = SubjectTriggers(
        c.conn,
        c.config.jetstream,
        engine,
        lambda identity: c.authorizer.roles_of(identity),
        lambda identity: c.authorizer.tenant_of(identity),
    )
    artifact_triggers = ArtifactTriggers(store, c.clock, engine)
    c.api_providers.append(engine)
    c.jobs.add(PeriodicJob("schedules", TICK_S, engine.fire_due))
    c.jobs.add(PeriodicJob("schedule-subject-triggers", TRIGGER_POLL_S, subject_triggers.poll))
    c.jobs.add(PeriodicJob("schedule-artifact-triggers", ARTIFACT_POLL_S, artifact_triggers.poll))
    workflow_sync = WorkflowTriggerSync(engine, workflows, c.conn.subjects.trigger_root)
    c.jobs.add(PeriodicJob("schedule-workflow-triggers", WORKFLOW_SYNC_S, workflow_sync.sync))
