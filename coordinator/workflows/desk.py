"""The workflow verbs of the API (common/verbs.py: workflow_*), answered by the coordinator."""

from __future__ import annotations

from typing import Any

import msgspec

from common import api, verbs
from common.errors import InvalidInputError
from coordinator.api_routes import serves
from coordinator.tenants.identity import tenant_of_request
from coordinator.workflows.engine import WorkflowEngine
from coordinator.workflows.views import trigger_text

_decoder = msgspec.json.Decoder()


class WorkflowDesk:
    """Handlers of `claw workflow ...`."""

    def __init__(self, engine: WorkflowEngine) -> None:
        self._engine = engine

    @serves(verbs.WORKFLOW_VALIDATE)
    async def validate(self, request: api.WorkflowSpecRequest) -> api.WorkflowValidateReply:
        """Check a spec against the skills known now; nothing is registered."""
        flow = self._engine.validate(request.spec, request.source)
        return api.WorkflowValidateReply(
            name=flow.name,
            order=flow.order,
            needs={name: list(node.deps) for name, node in flow.nodes.items()},
            trigger=trigger_text(flow.spec.trigger),
        )

    @serves(verbs.WORKFLOW_REGISTER)
    async def register(self, request: api.WorkflowSpecRequest) -> api.WorkflowRegisterReply:
        """Register a new version of a workflow."""
        return await self._engine.register(request.spec, source=request.source, by=request.registered_by)

    @serves(verbs.WORKFLOW_RUN)
    async def run(self, request: api.WorkflowRunRequest) -> api.WorkflowRunReply:
        """Start a run (or find the one `run_id` names)."""
        run_id, duplicate = await self._engine._start(
            request.name,
            _object(request.input),
            version=request.version,
            run_id=request.run_id,
            trigger="manual",
            submitter=request.submitter,
            tenant=tenant_of_request(request.tenant),
        )
        return await self._reply(run_id, duplicate)

    @serves(verbs.WORKFLOW_RERUN)
    async def rerun(self, request: api.WorkflowRerunRequest) -> api.WorkflowRunReply:
        """A new run from a node, reusing the outputs upstream of it."""
        run_id = await self._engine.rerun(
            request.run_id,
            request.from_node,
            input=None if request.input is None else _object(request.input),
            version=request.version,
            submitter=request.submitter,
        )
        return await self._reply(run_id, False)

    @serves(verbs.WORKFLOW_LIST)
    async def listing(self, request: api.WorkflowListRequest) -> api.WorkflowListReply:
        """Workflows and recent runs."""
        return await self._engine.listing(request)

    @serves(verbs.WORKFLOW_SHOW)
    async def show(self, request: api.WorkflowRunGetRequest) -> api.WorkflowRunView:
        """One run with its nodes."""
        return await self._engine.view(request.run_id)

    @serves(verbs.WORKFLOW_CANCEL)
    async def cancel(self, request: api.WorkflowCancelRequest) -> api.WorkflowRunView:
        """Cancel a run; returns it as it is then."""
        await self._engine.cancel(request.run_id, reason=request.reason, by=request.by)
        return await self._engine.view(request.run_id)

    async def _reply(self, run_id: str, duplicate: bool) -> api.WorkflowRunReply:
        name, version, state = await self._engine.summary(run_id)
        return api.WorkflowRunReply(run_id=run_id, name=name, version=version, state=state, duplicate=duplicate)


def _object(raw: msgspec.Raw) -> dict[str, Any]:
    try:
        value = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidInputError(f"the run input is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInputError('a workflow\'s input must be a JSON object, like {"symbol": "SYN"}')
    return value
