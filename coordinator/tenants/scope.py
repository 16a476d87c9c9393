"""A tenant's person sees and touches only its tenant's tasks: the rules, applied twice.

A key or token created with `--tenant acme` (`claw gateway key create --name app --roles submitter
--tenant acme`, `claw creds create app --role submitter --tenant acme --http`) is a tenant's.
`TenantScope` is applied by the gateway (`GatewayCalls.call`, gateway/calls.py) to every verb such a
key calls, whatever the door (REST, `/v1/verbs/{name}`, the dashboard, SSE, the WebSocket), and
again by the coordinator (coordinator/api_server.py) to every request a gateway sends acting for a
person with a tenant (the tenant of the credential the gateway forwards for them, checked there, or
the tenant their NATS credentials are bound to), so a gateway bug cannot reach another tenant's tasks
for that person:

- a submit is for the key's tenant (a request naming another tenant is refused);
- a task list is filtered to the key's tenant (a filter naming another tenant is refused);
- a verb on one task (get, cancel, retry, artifacts, approve, reject, replay) first reads the task:
  another tenant's task answers `not_found` exactly like a task that does not exist, so a key cannot
  even learn that an id is in use;
- the approval and dead-letter lists keep only the tenant's tasks, usage only the tenant's rows,
  the states of many tasks only the tenant's;
- every other verb (workflows, schedules, node and skill control, purges, limits changes, the audit)
  reaches beyond one tenant's tasks and is refused with `forbidden`.

Cluster-wide reads that name no task (status counts, nodes, skills, limits) stay open to every key.
A key without a tenant is the operators' and sees every tenant.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import msgspec

from common import api, verbs
from common.errors import InvalidInputError, PermissionDeniedError, TaskNotFoundError
from common.models import DeadLetterView, TaskView
from common.states import TaskState
from common.verbs import Verb
from communication.api_client import ActingFor

# Verbs a tenant's key may call as they are: they name no task.
OPEN_VERBS = frozenset(
    v.name for v in (verbs.PING, verbs.STATUS, verbs.NODES, verbs.SKILLS, verbs.LIMITS_LIST, verbs.GUARD_CHECK)
)
# Verbs on one task, named by the request's `task_id`: allowed for the tenant's own tasks only.
ONE_TASK_VERBS = frozenset(
    v.name
    for v in (
        verbs.TASK_GET,
        verbs.TASK_CANCEL,
        verbs.TASK_RETRY,
        verbs.ARTIFACTS,
        verbs.APPROVE,
        verbs.REJECT,
    )
)
# How many pages of a tenant's held or dead tasks are read to filter a list (500 tasks each).
_ID_PAGES = 20


def not_found(task_id: str) -> TaskNotFoundError:
    """What another tenant's task looks like: the coordinator's answer for an unknown id."""
    return TaskNotFoundError(f"no task with id {task_id}; `claw task list` shows recent ones")


class VerbCaller(Protocol):
    """What the rules read tasks through: a `ClawClient` (the gateway) or the coordinator's own
    handlers (coordinator/api_server.py)."""

    async def call(self, verb: Verb[Any, Any], request: Any, *, acting_for: ActingFor | None = None) -> Any:
        """Answer one request of `verb`."""
        ...


class TenantScope:
    """The tenant rules, reading tasks through `client` as the caller."""

    def __init__(self, client: VerbCaller) -> None:
        self._client = client

    async def before(self, tenant: str, acting: ActingFor, verb: Verb[Any, Any], request: Any) -> Any:
        """The request a tenant's key may send for `verb`, or a refusal."""
        name = verb.name
        if name in OPEN_VERBS:
            return request
        if name == verbs.SUBMIT.name:
            return msgspec.structs.replace(request, tenant=self._own(tenant, request.tenant))
        if name == verbs.TASK_LIST.name:
            return msgspec.structs.replace(request, tenant=self._own(tenant, request.tenant))
        if name in ONE_TASK_VERBS:
            await self.check_task(tenant, acting, request.task_id)
            return request
        if name == verbs.DLQ_REPLAY.name and request.task_id and not request.all:
            await self.check_task(tenant, acting, request.task_id)
            return request
        if name == verbs.USAGE.name:
            by = request.by if "tenant" in request.by else ["tenant", *request.by]
            return msgspec.structs.replace(request, by=by)
        if name in (verbs.APPROVALS.name, verbs.DLQ_LIST.name, verbs.TASK_STATES.name):
            return request  # filtered in `after`
        raise PermissionDeniedError(
            f"a key of tenant {tenant!r} may not call {name}: it reaches beyond the tenant's own tasks; "
            "use a key without a tenant"
        )

    async def after(self, tenant: str, acting: ActingFor, verb: Verb[Any, Any], reply: Any) -> Any:
        """The reply, with what belongs to other tenants left out."""
        name = verb.name
        if name == verbs.APPROVALS.name:
            reply = cast(api.ApprovalsReply, reply)
            mine = await self._ids(tenant, acting, TaskState.WAITING_APPROVAL)
            kept = [view for view in reply.approvals if view.task_id in mine]
            return msgspec.structs.replace(reply, approvals=kept, total=len(kept) if reply.total is not None else None)
        if name == verbs.DLQ_LIST.name:
            reply = cast(api.DlqListReply, reply)
            dead = await self._ids(tenant, acting, TaskState.DEAD)
            letters: list[DeadLetterView] = [v for v in reply.letters if v.letter.task_id in dead]
            total = len(letters) if reply.total is not None else None
            return msgspec.structs.replace(reply, letters=letters, total=total)
        if name == verbs.TASK_STATES.name:
            reply = cast(api.TaskStatesReply, reply)
            states = {}
            for task_id, state in reply.states.items():
                if await self._owns(tenant, acting, task_id):
                    states[task_id] = state
            return msgspec.structs.replace(reply, states=states)
        if name == verbs.USAGE.name:
            reply = cast(api.UsageReply, reply)
            return msgspec.structs.replace(reply, rows=[row for row in reply.rows if row.tenant == tenant])
        if name == verbs.TASK_GET.name and cast(TaskView, reply).tenant != tenant:
            raise not_found(cast(TaskView, reply).task_id)  # checked before; a belt to the braces
        return reply

    async def check_task(self, tenant: str, acting: ActingFor, task_id: str) -> None:
        """`not_found` unless the task exists and is the tenant's."""
        if not await self._owns(tenant, acting, task_id):
            raise not_found(task_id)

    async def _owns(self, tenant: str, acting: ActingFor, task_id: str) -> bool:
        try:
            view: TaskView = await self._client.call(
                verbs.TASK_GET, api.TaskGetRequest(task_id=task_id, history=False), acting_for=acting
            )
        except TaskNotFoundError:
            return False
        return view.tenant == tenant

    async def _ids(self, tenant: str, acting: ActingFor, state: TaskState) -> set[str]:
        """The ids of the tenant's tasks in `state` (the newest `_ID_PAGES` pages)."""
        ids: set[str] = set()
        cursor: str | None = None
        for _ in range(_ID_PAGES):
            request = api.TaskListRequest(state=state, tenant=tenant, limit=500, cursor=cursor)
            page = await self._client.call(verbs.TASK_LIST, request, acting_for=acting)
            ids.update(task.task_id for task in page.tasks)
            cursor = page.next_cursor
            if cursor is None:
                break
        return ids

    @staticmethod
    def _own(tenant: str, named: str | None) -> str:
        if named is not None and named != tenant:
            raise InvalidInputError(f"tenant {named!r} is not yours: your key is for tenant {tenant!r}; leave it out")
        return tenant
