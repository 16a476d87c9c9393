"""Schedules for the triggers that workflow specs declare (`trigger:` in a workflow file).

The workflows feature lists `(name, latest version, trigger)` of every registered workflow that
declares one (`coordinator.workflows.triggers()`). This job keeps one schedule per such workflow,
named `workflow.<name>` and created by `workflow:<name>`: made when the workflow is registered with a
trigger, made again when a new version changes the trigger (keeping a pause), deleted when the latest
version has none. Schedules made by hand are never touched. Each fire starts the workflow's latest
version through `start_run(..., run_id=<fire id>)` like any workflow schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from common import api
from common.errors import ClawError
from common.log import get_logger
from common.verbs import Role
from coordinator.schedules.engine import ScheduleEngine

log = get_logger("coordinator.schedules.workflow_triggers")

PREFIX = "workflow."
MAX_CATCHUP = 1000


class WorkflowTriggers(Protocol):
    """The part of the workflows feature this job reads."""

    async def triggers(self) -> list[tuple[str, int, Any]]:
        """(name, latest version, trigger) of every workflow whose latest version declares a trigger."""
        ...


class WorkflowTriggerSync:
    """Keeps the `workflow.<name>` schedules in step with the workflows' declared triggers."""

    def __init__(self, engine: ScheduleEngine, workflows: Callable[[], object | None], trigger_root: str) -> None:
        self._engine = engine
        self._workflows = workflows
        self._trigger_root = trigger_root

    async def sync(self) -> None:
        """The periodic job: create, replace or delete the derived schedules."""
        source = self._workflows()
        if source is None or not hasattr(source, "triggers"):
            return
        declared = await source.triggers()
        wanted = {}
        for name, version, trigger in declared:
            request = self.request_for(name, version, trigger)
            if request is not None:
                wanted[request.name] = request
        existing = {
            s.name: s
            for s in (await self._engine.schedules()).values()
            if s.name.startswith(PREFIX) and (s.row.created_by or "").startswith("workflow:")
        }
        for name in existing:
            if name not in wanted:
                await self._engine.delete(api.ScheduleNameRequest(name=name, by="workflows"))
        for name, request in wanted.items():
            current = existing.get(name)
            if current is not None and _same(current.spec, request):
                continue
            await self._replace(request, paused=current is not None and current.row.paused, exists=current is not None)

    def request_for(self, name: str, version: int, trigger: Any) -> api.ScheduleCreateRequest | None:
        """The schedule a workflow's trigger asks for (None, logged, when it cannot be one)."""
        subject = getattr(trigger, "subject", None)
        if subject is not None and subject.startswith(self._trigger_root):
            subject = subject[len(self._trigger_root) :]
        fields: dict[str, Any] = {
            "cron": getattr(trigger, "cron", None),
            "tz": getattr(trigger, "timezone", "UTC") or "UTC",
            "every_s": getattr(trigger, "interval_s", None),
            "on_subject": subject,
            "on_artifact": getattr(trigger, "artifact_prefix", None),
            "on_event": getattr(trigger, "webhook", None) is not None,
        }
        if not any(v for k, v in fields.items() if k != "tz"):
            return None  # a trigger with no source: runs start by hand
        try:
            request = api.ScheduleCreateRequest(
                name=f"{PREFIX}{name}",
                workflow=name,
                input=msgspec.Raw(msgspec.json.encode(getattr(trigger, "input", None) or {})),
                missed=getattr(trigger, "missed", "skip"),
                max_catchup=min(int(getattr(trigger, "missed_cap", 10)), MAX_CATCHUP),
                by=f"workflow:{name}@{version}",
                # A workflow's declared subject trigger is fired by whoever may submit (as before
                # trigger messages carried their publisher's identity).
                trigger_allow=[f"role:{Role.SUBMITTER.value}"] if subject is not None else [],
                **fields,
            )
            # Through the decoder, as a request from the wire would be: the name's pattern is checked.
            return msgspec.json.decode(msgspec.json.encode(request), type=api.ScheduleCreateRequest)
        except (msgspec.ValidationError, TypeError) as exc:
            log.warning("schedules.workflow_trigger_refused", workflow=name, version=version, error=str(exc))
            return None

    async def _replace(self, request: api.ScheduleCreateRequest, *, paused: bool, exists: bool) -> None:
        if exists:
            await self._engine.delete(api.ScheduleNameRequest(name=request.name, by=request.by))
        try:
            await self._engine.create(msgspec.structs.replace(request, paused=paused))
        except ClawError as exc:  # a cron expression or zone the workflow's validation let through
            log.warning("schedules.workflow_trigger_refused", schedule=request.name, error=str(exc))


def _same(current: api.ScheduleCreateRequest, wanted: api.ScheduleCreateRequest) -> bool:
    """The same rule, target and policy (who made it and the pause do not count)."""
    ignore = {"by", "paused"}
    fields = [f for f in msgspec.structs.fields(api.ScheduleCreateRequest) if f.name not in ignore]
    return bytes(current.input) == bytes(wanted.input) and all(
        getattr(current, f.name) == getattr(wanted, f.name) for f in fields if f.name != "input"
    )
