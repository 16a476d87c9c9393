"""The client of the coordinator API: what `claw` and user code call to submit and inspect tasks.

    async with await ClawClient.connect(NatsSettings(url="nats://127.0.0.1:4222")) as client:
        result = await client.submit(TaskSpec(skill="echo", input=msgspec.Raw(b'{"hi": 1}')))
        states = await client.wait([result.task_id])

Errors arrive as the `ClawError` subclass the coordinator raised (unknown skill, invalid input, ...);
no coordinator, or NATS down, raise `CoordinatorUnavailableError` / `NatsUnavailableError` with what
to do about it; a request larger than the server's max_payload raises `PayloadTooLargeError` before
anything is sent.

Each method is a thin wrapper over `call`, which takes any verb of `common.verbs` with its request
and returns its reply, typed as the verb declares:

    reply = await client.call(verbs.TASK_CANCEL, TaskCancelRequest(task_id=task_id))  # TaskActionReply

Lists come in pages (no reply may exceed max_payload): `<list>_page(limit=, cursor=)` fetches one
(`Page`: items, `next_cursor`, `total`), the plain method fetches pages until its `limit` (or all),
and `iter_<list>()` yields every item page by page:

    async for view in client.iter_approvals():
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nats.errors
from nats.aio.msg import Msg

from common import api, verbs
from common.config import ArtifactSettings, JetStreamSettings, NatsSettings
from common.errors import (
    ClawError,
    CoordinatorUnavailableError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QueueFullError,
    RequestTimeoutError,
    error_for_code,
)
from common.events import TaskEvent
from common.identity import BusRole
from common.ids import new_id
from common.models import (
    EMPTY_OBJECT,
    ArtifactView,
    ClusterStatus,
    DeadLetterView,
    NodeView,
    QuarantinedEvent,
    TaskSpec,
    TaskSummary,
    TaskUpdate,
    TaskView,
)
from common.skills import archive_sha256, folder_checksum, load_manifest, pack_skill
from common.states import TERMINAL_STATES, NodeControl, TaskState
from common.verbs import ReplyT, RequestT, Verb
from communication.codec import DecodeError, decode, decode_event, encode
from communication.connection import NatsConnection
from communication.pages import Page, collect, iterate
from communication.payload_limits import message_bytes, too_large_message
from communication.subjects import Header
from communication.topology import Topology
from communication.trace_context import headers_for

T = TypeVar("T")

MAX_TASKS_PER_REQUEST = 1000
SUBMITS_IN_FLIGHT = 4
PER_TASK_WAIT_SUBSCRIPTIONS = 1000
STATE_POLL_CHUNK = 5000
RETRY_PAUSE_S = 0.5
# Pauses between resubmits of a request refused with "queue full" (submit_many's queue_wait_s).
QUEUE_FULL_PAUSE_MIN_S = 0.05
QUEUE_FULL_PAUSE_MAX_S = 1.0
MAX_SKILL_ARCHIVE_BYTES = 64 * 1024 * 1024
NO_RESPONDERS_RETRIES_S = (0.05, 0.2, None)
# Items asked for per page when collecting a whole list (the coordinator may send fewer, to fit).
LIST_PAGE_SIZE = 1000
# What a request too large for NATS should do instead.
LARGE_REQUEST_HINT = (
    "send less in one request; large inputs go to the artifact store (claw submit --input-file does it, "
    "and cli.artifacts.offload_large_inputs for ClawClient users)"
)


@dataclass(frozen=True, slots=True)
class ActingFor:
    """A person a gateway authenticated, their tenant (None: every tenant's) and the credential they
    presented to it. A request sent with this names the person
    (`Claw-Acting-For`) and carries that credential (`Claw-Acting-Credential`); the coordinator takes
    it only from identities listed in `auth.gateways`, checks the credential itself and takes the
    person's name, roles and tenant from its record (coordinator/acting_proof.py)."""

    name: str
    tenant: str | None = None
    # The person's proof: never shown (repr) nor logged.
    credential: str | None = field(default=None, repr=False)


class ClawClient:
    """Talks to the coordinator over `<prefix>.api.<verb>`."""

    def __init__(self, conn: NatsConnection, *, owns_connection: bool = True) -> None:
        self.conn = conn
        self._owns = owns_connection
        self._timeout_s = conn.settings.request_timeout_s

    @classmethod
    async def connect(cls, settings: NatsSettings, *, name: str = "claw-client") -> ClawClient:
        """Connect to NATS (no retry: a client should say at once that NATS is not there)."""
        return cls(await NatsConnection.connect(settings, name=name, retry_s=0))

    async def close(self) -> None:
        """Close the connection if this client opened it."""
        if self._owns:
            await self.conn.close()

    async def __aenter__(self) -> ClawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- verbs ----------------------------------------------------------------------------------

    async def call(
        self,
        verb: Verb[RequestT, ReplyT],
        request: RequestT,
        *,
        timeout_s: float | None = None,
        acting_for: ActingFor | None = None,
    ) -> ReplyT:
        """Send one request of `verb` (`common.verbs`) and return its reply, decoded as the verb declares.

        Every method below is a thin wrapper over this; a caller that has only a verb's name (an HTTP
        gateway) finds it in `verbs.BY_NAME` and builds the request with `decode_request`. Waits
        `timeout_s`, else the verb's own timeout, else the connection's; raises the `ClawError` the
        coordinator answered with.
        """
        if not isinstance(request, verb.request):
            raise TypeError(f"the {verb.name} verb takes a {verb.request.__name__}, not a {type(request).__name__}")
        if self.conn.bus_role == BusRole.VIEWER and verb.role != verbs.Role.VIEWER:
            # The server would drop the request (a viewer may publish only the reading verbs), and
            # the caller would wait for an answer in vain: say why at once.
            raise PermissionDeniedError(
                f"{verb.name} needs the {verb.role.value} role; {self.conn.identity} holds viewer "
                "(these are a viewer's credentials)"
            )
        payload, headers = encode(request), headers_for()
        if acting_for is not None:
            headers[Header.ACTING_FOR] = acting_for.name
            if acting_for.credential is not None:
                headers[Header.ACTING_CREDENTIAL] = acting_for.credential
        self._check_size(verb, payload, headers)
        wait_s = timeout_s or verb.timeout_s or self._timeout_s
        try:
            subject = self.conn.subjects.api(self.conn.identity, verb.name)
            msg = await self._request(subject, payload, headers, wait_s)
        except (nats.errors.TimeoutError, TimeoutError):
            raise RequestTimeoutError(
                f"the coordinator did not answer {verb.name} within {wait_s:g} s; "
                "check it is running and healthy (`claw status`, its log)"
            ) from None
        reply = decode(msg.data, api.ApiReply)
        if reply.error is not None:
            raise error_for_code(reply.error.code, reply.error.message)
        return decode(reply.data, verb.reply)

    async def ping(self) -> api.PingReply:
        """Whether a coordinator answers, and its version."""
        return await self.call(verbs.PING, api.Empty())

    async def submit(
        self, spec: TaskSpec, *, submitter: str | None = None, tenant: str | None = None
    ) -> api.SubmitResult:
        """Submit one task (for `tenant`; unset: `default`); returns once it is persisted and queued."""
        return (await self.submit_many([spec], submitter=submitter, tenant=tenant))[0]

    async def submit_many(
        self,
        specs: Sequence[TaskSpec],
        *,
        submitter: str | None = None,
        retry_for_s: float = 0.0,
        queue_wait_s: float = 0.0,
        tenant: str | None = None,
    ) -> list[api.SubmitResult]:
        """Submit many tasks in as few requests as fit, several requests in flight; results in order.

        Each request is all-or-nothing; if one fails, the error is raised after the requests in
        flight complete (their tasks stay submitted, and the message says how many). With
        `retry_for_s`, a request that gets no answer (no coordinator, a timeout, NATS reconnecting)
        is sent again for that long; every task then carries a client-chosen id, so a retry of a
        request that did get through creates nothing. With `queue_wait_s`, a request refused because
        a skill's queue is full is sent again, with growing pauses, until there is room or that
        time has passed: backpressure for producers that submit faster than workers drain (a
        tenant's full `max_queued` quota counts as a full queue). `tenant`: whose tasks they are
        (unset: `default`); quotas and fair share are per tenant (docs/Flow_control.md).
        """
        if retry_for_s > 0:
            specs = [s if s.task_id else msgspec.structs.replace(s, task_id=new_id()) for s in specs]
        chunks = self._chunks(specs)
        results: list[list[api.SubmitResult]] = [[] for _ in chunks]
        limit = asyncio.Semaphore(SUBMITS_IN_FLIGHT)

        async def send(index: int, chunk: list[TaskSpec]) -> None:
            async with limit:
                timeout_s = self._timeout_s + len(chunk) / 500
                request = api.SubmitRequest(tasks=chunk, submitter=submitter, tenant=tenant)
                now = asyncio.get_running_loop().time
                deadline, room_deadline = now() + retry_for_s, now() + queue_wait_s
                room_pause_s = QUEUE_FULL_PAUSE_MIN_S
                while True:
                    try:
                        reply = await self.call(verbs.SUBMIT, request, timeout_s=timeout_s)
                        break
                    except (CoordinatorUnavailableError, RequestTimeoutError):
                        if now() >= deadline:
                            raise
                        await asyncio.sleep(RETRY_PAUSE_S)
                    except QueueFullError:
                        if now() >= room_deadline:
                            raise
                        await asyncio.sleep(room_pause_s)  # the request was refused whole: resending is safe
                        room_pause_s = min(room_pause_s * 2, QUEUE_FULL_PAUSE_MAX_S)
                results[index] = reply.results

        if len(chunks) == 1:
            await send(0, chunks[0])
        else:
            try:
                async with asyncio.TaskGroup() as tg:
                    for index, chunk in enumerate(chunks):
                        tg.create_task(send(index, chunk))
            except* ClawError as group:
                raise _partly_submitted(group.exceptions[0], sum(map(len, results)), len(specs)) from None
        return [r for chunk_results in results for r in chunk_results]

    async def artifacts(self, task_id: str) -> list[ArtifactView]:
        """A task's artifacts (metadata; read the bytes with an ArtifactStore), every page."""
        return await self._all(lambda cursor, n: self.artifacts_page(task_id, limit=n, cursor=cursor))

    async def artifacts_page(self, task_id: str, *, limit: int = 1000, cursor: str | None = None) -> Page[ArtifactView]:
        """One page of a task's artifacts, oldest first."""
        request = api.ArtifactsRequest(task_id=task_id, limit=limit, cursor=cursor)
        reply = await self.call(verbs.ARTIFACTS, request)
        return Page(reply.artifacts, reply.next_cursor, reply.total)

    async def artifact_store(self) -> ArtifactSettings:
        """The coordinator's artifact store settings (no secrets: credentials stay in the environment)."""
        return (await self.call(verbs.ARTIFACT_STORE, api.Empty())).settings

    async def get_task(self, task_id: str, *, history: bool = True) -> TaskView:
        """One task, with its attempts and event log when `history`."""
        return await self.call(verbs.TASK_GET, api.TaskGetRequest(task_id=task_id, history=history))

    async def list_tasks(
        self,
        *,
        state: TaskState | None = None,
        skill: str | None = None,
        limit: int | None = 50,
        tenant: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> list[TaskSummary]:
        """The newest `limit` tasks (every one: None), newest first, fetched page by page; `created_after`
        and `created_before` (Unix seconds) bound when they were created."""
        fetch = self._tasks_fetcher(state, skill, tenant, created_after, created_before)
        return (await collect(fetch, limit=limit, page_size=LIST_PAGE_SIZE)).items

    async def tasks_page(
        self,
        *,
        state: TaskState | None = None,
        skill: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> Page[TaskSummary]:
        """One page of tasks, newest first; `total` (first page) counts all that match."""
        request = api.TaskListRequest(
            state=state, skill=skill, limit=limit, cursor=cursor, tenant=tenant, created_after=created_after,
            created_before=created_before,
        )  # fmt: skip
        reply = await self.call(verbs.TASK_LIST, request)
        return Page(reply.tasks, reply.next_cursor, reply.total)

    def iter_tasks(
        self,
        *,
        state: TaskState | None = None,
        skill: str | None = None,
        page_size: int = LIST_PAGE_SIZE,
        tenant: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> AsyncIterator[TaskSummary]:
        """Every task that matches, newest first, one page at a time."""
        fetch = self._tasks_fetcher(state, skill, tenant, created_after, created_before)
        return iterate(fetch, page_size=page_size)

    def _tasks_fetcher(
        self,
        state: TaskState | None,
        skill: str | None,
        tenant: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> Callable[[str | None, int], Awaitable[Page[TaskSummary]]]:
        return lambda cursor, n: self.tasks_page(
            state=state, skill=skill, limit=n, cursor=cursor, tenant=tenant, created_after=created_after,
            created_before=created_before,
        )  # fmt: skip

    async def task_states(self, task_ids: Sequence[str]) -> dict[str, TaskState]:
        """Current state of each id (unknown ids are absent)."""
        states: dict[str, TaskState] = {}
        for start in range(0, len(task_ids), STATE_POLL_CHUNK):
            chunk = list(task_ids[start : start + STATE_POLL_CHUNK])
            reply = await self.call(verbs.TASK_STATES, api.TaskStatesRequest(task_ids=chunk))
            states.update(reply.states)
        return states

    async def nodes(self) -> list[NodeView]:
        """The node registry, every page."""
        return await self._all(lambda cursor, n: self.nodes_page(limit=n, cursor=cursor))

    async def nodes_page(self, *, limit: int = 1000, cursor: str | None = None) -> Page[NodeView]:
        """One page of the node registry, online nodes first."""
        reply = await self.call(verbs.NODES, api.NodesRequest(limit=limit, cursor=cursor))
        return Page(reply.nodes, reply.next_cursor, reply.total)

    async def node_control(self, node_id: str, control: NodeControl, *, by: str | None = None) -> api.NodeControlReply:
        """Ask a node to be active, paused or drained; the reply says what it does now."""
        request = api.NodeControlRequest(node_id=node_id, control=control, by=by)
        return await self.call(verbs.NODE_CONTROL, request)

    async def status(self, *, window_s: float = 3600.0) -> ClusterStatus:
        """The cluster overview, with rates over the tasks that finished in the last `window_s`."""
        return (await self.call(verbs.STATUS, api.StatusRequest(window_s=window_s))).status

    async def cancel(
        self, task_id: str, *, reason: str = "cancelled by request", by: str | None = None
    ) -> api.TaskActionReply:
        """Cancel a task that has not finished (a running attempt is stopped on its worker)."""
        return await self.call(verbs.TASK_CANCEL, api.TaskCancelRequest(task_id=task_id, reason=reason, by=by))

    async def retry(self, task_id: str, *, by: str | None = None) -> api.TaskActionReply:
        """Run a failed, dead or cancelled task again as a new attempt series."""
        return await self.call(verbs.TASK_RETRY, api.TaskRetryRequest(task_id=task_id, by=by))

    async def dlq_list(self, *, skill: str | None = None, limit: int | None = 50) -> list[DeadLetterView]:
        """The newest `limit` dead letters (all: None), newest first, fetched page by page."""
        fetch = self._dlq_fetcher(skill)
        return (await collect(fetch, limit=limit, page_size=LIST_PAGE_SIZE)).items

    async def dlq_page(
        self, *, skill: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[DeadLetterView]:
        """One page of dead letters, newest first; `total` (first page, no skill) is the DLQ's size."""
        request = api.DlqListRequest(skill=skill, limit=limit, cursor=cursor)
        reply = await self.call(verbs.DLQ_LIST, request)
        return Page(reply.letters, reply.next_cursor, reply.total)

    def iter_dead_letters(
        self, *, skill: str | None = None, page_size: int = LIST_PAGE_SIZE
    ) -> AsyncIterator[DeadLetterView]:
        """Every dead letter, newest first, one page at a time."""
        return iterate(self._dlq_fetcher(skill), page_size=page_size)

    def _dlq_fetcher(self, skill: str | None) -> Callable[[str | None, int], Awaitable[Page[DeadLetterView]]]:
        return lambda cursor, n: self.dlq_page(skill=skill, limit=n, cursor=cursor)

    async def dlq_replay(
        self, task_id: str | None = None, *, all: bool = False, skill: str | None = None, by: str | None = None
    ) -> list[api.TaskActionReply]:
        """Replay one dead task, or all of them (of a skill); replaying twice changes nothing.

        `all` goes through the DLQ one page per request, each letter once (a task that dies again
        meanwhile gets a new letter above the pages still to come, and is not replayed twice).
        """
        results: list[api.TaskActionReply] = []
        cursor: str | None = None
        while True:
            request = api.DlqReplayRequest(task_id=task_id, all=all, skill=skill, by=by, cursor=cursor)
            reply = await self.call(verbs.DLQ_REPLAY, request)
            results.extend(reply.results)
            if not all or reply.next_cursor is None or reply.next_cursor == cursor:
                return results
            cursor = reply.next_cursor

    async def dlq_purge(self, *, skill: str | None = None, older_than_s: float | None = None) -> int:
        """Drop dead letters; returns how many."""
        request = api.DlqPurgeRequest(skill=skill, older_than_s=older_than_s)
        return (await self.call(verbs.DLQ_PURGE, request)).purged

    async def skills(self, *, name: str | None = None, search: str | None = None) -> list[api.SkillInfo]:
        """Registered skills (all, one by name, or matching words), every page."""
        return await self._all(lambda cursor, n: self.skills_page(name=name, search=search, limit=n, cursor=cursor))

    async def skills_page(
        self, *, name: str | None = None, search: str | None = None, limit: int = 500, cursor: str | None = None
    ) -> Page[api.SkillInfo]:
        """One page of registered skills."""
        request = api.SkillsRequest(name=name, search=search, limit=limit, cursor=cursor)
        reply = await self.call(verbs.SKILLS, request)
        return Page(reply.skills, reply.next_cursor, reply.total)

    async def set_skill_enabled(
        self, name: str, *, enabled: bool, version: str | None = None, by: str | None = None
    ) -> api.SkillInfo:
        """Enable (one version) or disable (one or all versions) a skill."""
        request = api.SkillToggleRequest(name=name, version=version, enabled=enabled, by=by)
        return (await self.call(verbs.SKILL_TOGGLE, request)).skills[0]

    async def install_skill(
        self, folder: Path, *, by: str | None = None, allow_risk_change: bool = False
    ) -> api.SkillInstallReply:
        """Validate a skill folder, upload its files, and register it (`allow_risk_change`: the
        version may declare a lower risk than an earlier one; the coordinator records it)."""
        manifest = load_manifest(folder)
        checksum = await asyncio.to_thread(folder_checksum, folder)
        archive = await asyncio.to_thread(pack_skill, folder)
        if len(archive) > MAX_SKILL_ARCHIVE_BYTES:
            raise PayloadTooLargeError(
                f"the skill folder packs to {len(archive) / 1048576:.1f} MiB; at most "
                f"{MAX_SKILL_ARCHIVE_BYTES / 1048576:.0f} MiB can be installed (leave data out of the folder)"
            )
        store = await Topology(self.conn, JetStreamSettings()).skill_code()
        name = f"{manifest.name}/{manifest.version}/{checksum[:16]}.tar.gz"
        await store.put(name, archive)
        request = api.SkillInstallRequest(
            manifest=manifest,
            checksum=checksum,
            archive=name,
            by=by,
            archive_sha256=archive_sha256(archive),
            allow_risk_change=allow_risk_change,
        )
        return await self.call(verbs.SKILL_INSTALL, request)

    async def approvals(self, *, limit: int | None = None) -> list[api.ApprovalView]:
        """The first `limit` tasks waiting for approval (all: None), oldest first, page by page."""
        return (await collect(self._approvals_page, limit=limit, page_size=LIST_PAGE_SIZE)).items

    async def approvals_page(self, *, limit: int = 500, cursor: str | None = None) -> Page[api.ApprovalView]:
        """One page of the tasks waiting for approval; `total` (first page) counts them all."""
        reply = await self.call(verbs.APPROVALS, api.ApprovalsRequest(limit=limit, cursor=cursor))
        return Page(reply.approvals, reply.next_cursor, reply.total)

    def iter_approvals(self, *, page_size: int = LIST_PAGE_SIZE) -> AsyncIterator[api.ApprovalView]:
        """Every task waiting for approval, oldest first, one page at a time."""
        return iterate(self._approvals_page, page_size=page_size)

    async def _approvals_page(self, cursor: str | None, limit: int) -> Page[api.ApprovalView]:
        return await self.approvals_page(limit=limit, cursor=cursor)

    async def approve(self, task_id: str, *, by: str | None = None, note: str | None = None) -> api.ApprovalOutcome:
        """Approve a held task as this connection's identity (`by` is ignored: the coordinator takes
        who approves from the credentials)."""
        return await self.call(verbs.APPROVE, api.ApproveRequest(task_id=task_id, by=by or "", note=note))

    async def reject(self, task_id: str, *, by: str | None = None, reason: str) -> api.ApprovalOutcome:
        """Reject a held task as this connection's identity (`by` is ignored, as in `approve`)."""
        return await self.call(verbs.REJECT, api.RejectRequest(task_id=task_id, by=by or "", reason=reason))

    async def guard_check(
        self, skill: str, input: msgspec.Raw = EMPTY_OBJECT, *, submitter: str | None = None
    ) -> api.GuardCheckReply:
        """Which guard rule would apply to such a task, and why."""
        request = api.GuardCheckRequest(skill=skill, input=input, submitter=submitter)
        return await self.call(verbs.GUARD_CHECK, request)

    async def audit_verify(self) -> api.AuditReply:
        """Verify the event log's hash chain (and its anchor in NATS)."""
        return await self.call(verbs.AUDIT_VERIFY, api.Empty())

    async def quarantine_list(self, *, task_id: str | None = None, limit: int = 50) -> list[QuarantinedEvent]:
        """Task events the coordinator could not decode or fold, newest first (at most 500)."""
        request = api.QuarantineListRequest(task_id=task_id, limit=limit)
        return (await self.call(verbs.QUARANTINE_LIST, request)).events

    # --- schedules (docs/Scheduling.md) -----------------------------------------------------------

    async def schedules(self) -> list[api.ScheduleView]:
        """Every schedule, with its next fire time."""
        return (await self.call(verbs.SCHEDULE_LIST, api.ScheduleListRequest())).schedules

    async def create_schedule(self, request: api.ScheduleCreateRequest) -> api.ScheduleView:
        """Make a schedule (`claw schedules create`); refused with one clear error when it cannot work."""
        return await self.call(verbs.SCHEDULE_CREATE, request)

    async def trigger_schedule(
        self, name: str, *, key: str | None = None, by: str | None = None
    ) -> api.ScheduleFireView:
        """Fire a schedule now; with `key`, once per key (a retry answers the first fire, `duplicate`)."""
        request = api.ScheduleTriggerRequest(name=name, key=key, by=by)
        return (await self.call(verbs.SCHEDULE_TRIGGER, request)).fire

    async def schedule_event(self, name: str, event_id: str, data: object = None) -> api.ScheduleFireView:
        """Fire a schedule for an outside event (a webhook), once per `event_id`."""
        request = api.ScheduleEventRequest(name=name, event_id=event_id, data=msgspec.Raw(msgspec.json.encode(data)))
        return (await self.call(verbs.SCHEDULE_EVENT, request)).fire

    async def publish_trigger(self, subject: str, data: object = None, *, msg_id: str | None = None) -> int:
        """Publish a trigger message on `subject` (relative, as `--on-subject` takes it) under this
        connection's identity, `<prefix>.trigger.<identity>.<subject>`: it fires the matching schedules
        this identity may fire. Returns its stream sequence; `msg_id` makes a retried publish count once."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        ack = await self.conn.js.publish(
            self.conn.subjects.trigger(self.conn.identity, subject), msgspec.json.encode(data), headers=headers
        )
        return int(ack.seq)

    async def schedule(self, name: str) -> api.ScheduleShowReply:
        """One schedule with its next and last fires."""
        return await self.call(verbs.SCHEDULE_SHOW, api.ScheduleNameRequest(name=name))

    async def pause_schedule(self, name: str) -> api.ScheduleView:
        """Stop a schedule firing until it is resumed."""
        return await self.call(verbs.SCHEDULE_PAUSE, api.ScheduleNameRequest(name=name))

    async def resume_schedule(self, name: str) -> api.ScheduleView:
        """Let a paused schedule fire again."""
        return await self.call(verbs.SCHEDULE_RESUME, api.ScheduleNameRequest(name=name))

    # --- workflows, limits and usage (the same verbs as the HTTP gateway's routes) ----------------

    async def register_workflow(self, spec: str, *, source: str = "") -> api.WorkflowRegisterReply:
        """Register a workflow from its YAML or JSON text (a new version when it changed)."""
        return await self.call(verbs.WORKFLOW_REGISTER, api.WorkflowSpecRequest(spec=spec, source=source))

    async def workflows(
        self, *, name: str | None = None, state: str | None = None, limit: int = 50
    ) -> api.WorkflowListReply:
        """Registered workflows and the newest runs (of `name`, in `state`)."""
        return await self.call(verbs.WORKFLOW_LIST, api.WorkflowListRequest(name=name, state=state, limit=limit))

    async def run_workflow(
        self, name: str, input: object = None, *, version: int | None = None, run_id: str | None = None
    ) -> api.WorkflowRunReply:
        """Start a run of a workflow with `input` (a JSON value); `run_id` makes a retry idempotent."""
        raw = msgspec.Raw(msgspec.json.encode({} if input is None else input))
        return await self.call(
            verbs.WORKFLOW_RUN, api.WorkflowRunRequest(name=name, input=raw, version=version, run_id=run_id)
        )

    async def workflow_run(self, run_id: str) -> api.WorkflowRunView:
        """One run with its nodes' states."""
        return await self.call(verbs.WORKFLOW_SHOW, api.WorkflowRunGetRequest(run_id=run_id))

    async def rerun_workflow(self, run_id: str, from_node: str) -> api.WorkflowRunReply:
        """A new run that reuses the results of the nodes before `from_node` and runs it and the rest."""
        return await self.call(verbs.WORKFLOW_RERUN, api.WorkflowRerunRequest(run_id=run_id, from_node=from_node))

    async def cancel_run(self, run_id: str, reason: str = "") -> api.WorkflowRunView:
        """Cancel a run and its unfinished tasks."""
        return await self.call(verbs.WORKFLOW_CANCEL, api.WorkflowCancelRequest(run_id=run_id, reason=reason))

    async def limits(self) -> list[api.LimitView]:
        """Rate limits with their live use (requests and tokens in the last minute, in flight, cooldown)."""
        return (await self.call(verbs.LIMITS_LIST, api.LimitsListRequest())).limits

    async def usage(
        self, *, by: Sequence[str] = ("tenant", "skill", "model"), since_s: float = 86400.0
    ) -> api.UsageReply:
        """Calls, tokens and cost grouped `by` tenant, skill, model and/or hour, over the last `since_s`."""
        return await self.call(verbs.USAGE, api.UsageRequest(by=list(by), since_s=since_s))

    async def wait(
        self,
        task_ids: Sequence[str],
        *,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        on_finished: Callable[[str, TaskState], None] | None = None,
        on_unavailable: Callable[[ClawError], None] | None = None,
    ) -> dict[str, TaskState]:
        """Wait until every task is finished; returns id -> final state.

        Listens to the coordinator's state broadcasts and, as a safety net for missed broadcasts,
        polls the states of what is still open every `poll_s`. A coordinator that stops answering
        (restarting, say) is waited for: `on_unavailable` hears of it once per outage. Raises
        `RequestTimeoutError` after `timeout_s` (None: wait for ever).
        """
        waiting = set(task_ids)
        final: dict[str, TaskState] = {}
        changed = asyncio.Event()

        def settle(task_id: str, state: TaskState) -> None:
            if task_id in waiting and state in TERMINAL_STATES:
                waiting.discard(task_id)
                final[task_id] = state
                if on_finished is not None:
                    on_finished(task_id, state)
                changed.set()

        async def on_update(msg: Msg) -> None:
            try:
                update = decode(msg.data, TaskUpdate)
            except DecodeError:
                return  # a hint only; the poll is the truth
            settle(update.task_id, update.state)

        subs = await self._subscribe_updates(list(waiting), on_update)
        try:
            async with asyncio.timeout(timeout_s):
                outage = False
                while waiting:
                    try:
                        states = await self.task_states(list(waiting))
                        outage = False
                    except (CoordinatorUnavailableError, RequestTimeoutError) as exc:
                        if not outage and on_unavailable is not None:
                            on_unavailable(exc)
                        outage, states = True, {}
                    for task_id, state in states.items():
                        settle(task_id, state)
                    if not waiting:
                        break
                    changed.clear()
                    try:
                        async with asyncio.timeout(poll_s):
                            await changed.wait()
                    except TimeoutError:
                        pass
        except TimeoutError:
            raise RequestTimeoutError(
                f"{len(waiting)} of {len(task_ids)} task(s) still unfinished after {timeout_s:g} s"
            ) from None
        finally:
            for sub in subs:
                await sub.unsubscribe()
        return final

    async def watch(self, task_id: str, *, poll_s: float = 2.0) -> AsyncIterator[TaskEvent]:
        """The task's events as workers report them (started, progress, log, succeeded, failed, ...),
        from now until the task has ended; then the iteration stops.

        Live only: what happened before the call is in `get_task(task_id).events`. Events are
        broadcasts, so one can be missed while NATS reconnects; the end is not, since the task's
        state is also polled every `poll_s`.
        """
        events: asyncio.Queue[TaskEvent] = asyncio.Queue()
        ended = asyncio.Event()

        async def on_event(msg: Msg) -> None:
            try:
                events.put_nowait(decode_event(msg.data))
            except DecodeError:
                return  # not ours to judge here; the coordinator records bad events

        async def on_update(msg: Msg) -> None:
            with contextlib.suppress(DecodeError):
                if decode(msg.data, TaskUpdate).state in TERMINAL_STATES:
                    ended.set()

        subjects = self.conn.subjects
        subs = [await self.conn.nc.subscribe(subjects.updates(task_id), cb=on_update)]
        if self.conn.reads_events:
            subs.append(await self.conn.nc.subscribe(subjects.events_of(task_id), cb=on_event))
        try:
            await self.conn.nc.flush()
            if (await self.get_task(task_id, history=False)).state in TERMINAL_STATES:
                ended.set()
            while not (ended.is_set() and events.empty()):
                try:
                    async with asyncio.timeout(poll_s):  # never around the yield: it would time the caller
                        event = await events.get()
                except TimeoutError:
                    if (await self.task_states([task_id])).get(task_id) in TERMINAL_STATES:
                        ended.set()
                    continue
                yield event
        finally:
            for sub in subs:
                await sub.unsubscribe()

    # --- plumbing -------------------------------------------------------------------------------

    def _check_size(self, verb: Verb[Any, Any], payload: bytes, headers: dict[str, str]) -> None:
        size, max_payload = message_bytes(payload, headers), self.conn.nc.max_payload
        if size > max_payload:
            # nats-server would disconnect us for it: say what to do instead.
            raise PayloadTooLargeError(
                f"{too_large_message(f'the {verb.name} request', size, max_payload)}; {LARGE_REQUEST_HINT}"
            )

    async def _request(self, subject: str, payload: bytes, headers: dict[str, str], timeout_s: float) -> Msg:
        for pause_s in NO_RESPONDERS_RETRIES_S:
            try:
                return await self.conn.nc.request(subject, payload, timeout=timeout_s, headers=headers)
            except nats.errors.NoRespondersError:
                # nats-server can answer "no responders" for a moment after a subscriber appeared
                # (seen about once in 300 fresh subscriptions here); only a repeated answer counts.
                if pause_s is None:
                    break
                await asyncio.sleep(pause_s)
        raise CoordinatorUnavailableError(
            f"no coordinator is answering on {subject}; start one with `claw coordinator start` "
            "(or a whole local cluster with `claw up`)"
        )

    async def _subscribe_updates(self, task_ids: list[str], cb: Callable[[Msg], Awaitable[None]]) -> list[Any]:
        subjects = self.conn.subjects
        if len(task_ids) > PER_TASK_WAIT_SUBSCRIPTIONS:
            return [await self.conn.nc.subscribe(subjects.updates_all, cb=cb)]
        return [await self.conn.nc.subscribe(subjects.updates(t), cb=cb) for t in task_ids]

    @staticmethod
    async def _all(fetch: Callable[[str | None, int], Awaitable[Page[T]]]) -> list[T]:
        return (await collect(fetch, limit=None, page_size=LIST_PAGE_SIZE)).items

    def _chunks(self, specs: Sequence[TaskSpec]) -> list[list[TaskSpec]]:
        budget = int(self.conn.nc.max_payload * 0.9)
        chunks: list[list[TaskSpec]] = []
        current: list[TaskSpec] = []
        size = 0
        for index, spec in enumerate(specs):
            spec_size = len(encode(spec)) + 1
            if spec_size > budget:
                where = f"task {index + 1}: " if len(specs) > 1 else ""
                raise PayloadTooLargeError(
                    f"{where}the task is {spec_size / 1048576:.1f} MiB encoded, over NATS's message limit of "
                    f"{self.conn.nc.max_payload / 1048576:.1f} MiB (the server's max_payload); put large inputs in "
                    "the artifact store: `claw submit --input-file` does, ClawClient users call "
                    "cli.artifacts.offload_large_inputs"
                )
            if current and (size + spec_size > budget or len(current) >= MAX_TASKS_PER_REQUEST):
                chunks.append(current)
                current, size = [], 0
            current.append(spec)
            size += spec_size
        if current:
            chunks.append(current)
        return chunks


def _partly_submitted(error: BaseException, submitted: int, total: int) -> BaseException:
    """`error`, saying how many of the tasks did get in before it (they will run)."""
    if not submitted or not isinstance(error, ClawError):
        return error
    message = (
        f"{submitted} of {total} tasks were submitted and will run; the other {total - submitted} were not: {error}"
    )
    try:
        return type(error)(message)
    except TypeError:  # an error class with other required arguments: keep it as it is
        return error
