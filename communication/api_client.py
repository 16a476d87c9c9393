"""The client of the coordinator API: what `claw` and user code call to submit and inspect tasks.

    async with await ClawClient.connect(NatsSettings(url="nats://127.0.0.1:4222")) as client:
        result = await client.submit(TaskSpec(skill="echo", input=msgspec.Raw(b'{"hi": 1}')))
        states = await client.wait([result.task_id])

Errors arrive as the `ClawError` subclass the coordinator raised (unknown skill, invalid input, ...);
no coordinator, or NATS down, raise `CoordinatorUnavailableError` / `NatsUnavailableError` with what
to do about it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nats.errors
from nats.aio.msg import Msg

from common.api import (
    ApiReply,
    ApiVerb,
    ApprovalOutcome,
    ApprovalsReply,
    ApprovalView,
    ApproveRequest,
    ArtifactsReply,
    ArtifactsRequest,
    ArtifactStoreReply,
    AuditReply,
    DlqListReply,
    DlqListRequest,
    DlqPurgeReply,
    DlqPurgeRequest,
    DlqReplayReply,
    DlqReplayRequest,
    Empty,
    GuardCheckReply,
    GuardCheckRequest,
    NodesReply,
    PingReply,
    RejectRequest,
    SkillInfo,
    SkillInstallReply,
    SkillInstallRequest,
    SkillsReply,
    SkillsRequest,
    SkillToggleRequest,
    StatusReply,
    StatusRequest,
    SubmitReply,
    SubmitRequest,
    SubmitResult,
    TaskActionReply,
    TaskCancelRequest,
    TaskGetRequest,
    TaskListReply,
    TaskListRequest,
    TaskRetryRequest,
    TaskStatesReply,
    TaskStatesRequest,
)
from common.config import ArtifactSettings, JetStreamSettings, NatsSettings
from common.errors import (
    ClawError,
    CoordinatorUnavailableError,
    PayloadTooLargeError,
    QueueFullError,
    RequestTimeoutError,
    error_for_code,
)
from common.events import TaskEvent
from common.ids import new_id
from common.models import (
    EMPTY_OBJECT,
    ArtifactView,
    ClusterStatus,
    DeadLetterView,
    NodeView,
    TaskSpec,
    TaskSummary,
    TaskUpdate,
    TaskView,
)
from common.skills import folder_checksum, load_manifest, pack_skill
from common.states import TERMINAL_STATES, TaskState
from communication.codec import DecodeError, decode, decode_event, encode
from communication.connection import NatsConnection
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

    async def ping(self) -> PingReply:
        """Whether a coordinator answers, and its version."""
        return await self._call(ApiVerb.PING, Empty(), PingReply)

    async def submit(self, spec: TaskSpec, *, submitter: str | None = None) -> SubmitResult:
        """Submit one task; returns once it is persisted and queued."""
        return (await self.submit_many([spec], submitter=submitter))[0]

    async def submit_many(
        self,
        specs: Sequence[TaskSpec],
        *,
        submitter: str | None = None,
        retry_for_s: float = 0.0,
        queue_wait_s: float = 0.0,
    ) -> list[SubmitResult]:
        """Submit many tasks in as few requests as fit, several requests in flight; results in order.

        Each request is all-or-nothing; if one fails, the error is raised after the requests in
        flight complete (their tasks stay submitted, and the message says how many). With
        `retry_for_s`, a request that gets no answer (no coordinator, a timeout, NATS reconnecting)
        is sent again for that long; every task then carries a client-chosen id, so a retry of a
        request that did get through creates nothing. With `queue_wait_s`, a request refused because
        a skill's queue is full is sent again, with growing pauses, until there is room or that
        time has passed: backpressure for producers that submit faster than workers drain.
        """
        if retry_for_s > 0:
            specs = [s if s.task_id else msgspec.structs.replace(s, task_id=new_id()) for s in specs]
        chunks = self._chunks(specs)
        results: list[list[SubmitResult]] = [[] for _ in chunks]
        limit = asyncio.Semaphore(SUBMITS_IN_FLIGHT)

        async def send(index: int, chunk: list[TaskSpec]) -> None:
            async with limit:
                timeout_s = self._timeout_s + len(chunk) / 500
                request = SubmitRequest(tasks=chunk, submitter=submitter)
                now = asyncio.get_running_loop().time
                deadline, room_deadline = now() + retry_for_s, now() + queue_wait_s
                room_pause_s = QUEUE_FULL_PAUSE_MIN_S
                while True:
                    try:
                        reply = await self._call(ApiVerb.SUBMIT, request, SubmitReply, timeout_s=timeout_s)
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
        """A task's artifacts (metadata; read the bytes with an ArtifactStore)."""
        return (await self._call(ApiVerb.ARTIFACTS, ArtifactsRequest(task_id=task_id), ArtifactsReply)).artifacts

    async def artifact_store(self) -> ArtifactSettings:
        """The coordinator's artifact store settings (no secrets: credentials stay in the environment)."""
        return (await self._call(ApiVerb.ARTIFACT_STORE, Empty(), ArtifactStoreReply)).settings

    async def get_task(self, task_id: str, *, history: bool = True) -> TaskView:
        """One task, with its attempts and event log when `history`."""
        return await self._call(ApiVerb.TASK_GET, TaskGetRequest(task_id=task_id, history=history), TaskView)

    async def list_tasks(
        self, *, state: TaskState | None = None, skill: str | None = None, limit: int = 50
    ) -> list[TaskSummary]:
        """Newest tasks first."""
        request = TaskListRequest(state=state, skill=skill, limit=limit)
        return (await self._call(ApiVerb.TASK_LIST, request, TaskListReply)).tasks

    async def task_states(self, task_ids: Sequence[str]) -> dict[str, TaskState]:
        """Current state of each id (unknown ids are absent)."""
        states: dict[str, TaskState] = {}
        for start in range(0, len(task_ids), STATE_POLL_CHUNK):
            chunk = list(task_ids[start : start + STATE_POLL_CHUNK])
            reply = await self._call(ApiVerb.TASK_STATES, TaskStatesRequest(task_ids=chunk), TaskStatesReply)
            states.update(reply.states)
        return states

    async def nodes(self) -> list[NodeView]:
        """The node registry."""
        return (await self._call(ApiVerb.NODES, Empty(), NodesReply)).nodes

    async def status(self, *, window_s: float = 3600.0) -> ClusterStatus:
        """The cluster overview, with rates over the tasks that finished in the last `window_s`."""
        return (await self._call(ApiVerb.STATUS, StatusRequest(window_s=window_s), StatusReply)).status

    async def cancel(
        self, task_id: str, *, reason: str = "cancelled by request", by: str | None = None
    ) -> TaskActionReply:
        """Cancel a task that has not finished (a running attempt is stopped on its worker)."""
        return await self._call(
            ApiVerb.TASK_CANCEL, TaskCancelRequest(task_id=task_id, reason=reason, by=by), TaskActionReply
        )

    async def retry(self, task_id: str, *, by: str | None = None) -> TaskActionReply:
        """Run a failed, dead or cancelled task again as a new attempt series."""
        return await self._call(ApiVerb.TASK_RETRY, TaskRetryRequest(task_id=task_id, by=by), TaskActionReply)

    async def dlq_list(self, *, skill: str | None = None, limit: int = 50) -> list[DeadLetterView]:
        """Dead letters, newest first."""
        return (await self._call(ApiVerb.DLQ_LIST, DlqListRequest(skill=skill, limit=limit), DlqListReply)).letters

    async def dlq_replay(
        self, task_id: str | None = None, *, all: bool = False, skill: str | None = None, by: str | None = None
    ) -> list[TaskActionReply]:
        """Replay one dead task, or all of them (of a skill); replaying twice changes nothing."""
        request = DlqReplayRequest(task_id=task_id, all=all, skill=skill, by=by)
        return (await self._call(ApiVerb.DLQ_REPLAY, request, DlqReplayReply, timeout_s=60.0)).results

    async def dlq_purge(self, *, skill: str | None = None, older_than_s: float | None = None) -> int:
        """Drop dead letters; returns how many."""
        request = DlqPurgeRequest(skill=skill, older_than_s=older_than_s)
        return (await self._call(ApiVerb.DLQ_PURGE, request, DlqPurgeReply, timeout_s=60.0)).purged

    async def skills(self, *, name: str | None = None, search: str | None = None) -> list[SkillInfo]:
        """Registered skills (all, one by name, or matching words)."""
        return (await self._call(ApiVerb.SKILLS, SkillsRequest(name=name, search=search), SkillsReply)).skills

    async def set_skill_enabled(
        self, name: str, *, enabled: bool, version: str | None = None, by: str | None = None
    ) -> SkillInfo:
        """Enable (one version) or disable (one or all versions) a skill."""
        request = SkillToggleRequest(name=name, version=version, enabled=enabled, by=by)
        return (await self._call(ApiVerb.SKILL_TOGGLE, request, SkillsReply)).skills[0]

    async def install_skill(self, folder: Path, *, by: str | None = None) -> SkillInstallReply:
        """Validate a skill folder, upload its files, and register it."""
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
        request = SkillInstallRequest(manifest=manifest, checksum=checksum, archive=name, by=by)
        return await self._call(ApiVerb.SKILL_INSTALL, request, SkillInstallReply)

    async def approvals(self) -> list[ApprovalView]:
        """Tasks waiting for approval, oldest first."""
        return (await self._call(ApiVerb.APPROVALS, Empty(), ApprovalsReply)).approvals

    async def approve(self, task_id: str, *, by: str, note: str | None = None) -> ApprovalOutcome:
        """Record `by`'s approval of a held task."""
        return await self._call(ApiVerb.APPROVE, ApproveRequest(task_id=task_id, by=by, note=note), ApprovalOutcome)

    async def reject(self, task_id: str, *, by: str, reason: str) -> ApprovalOutcome:
        """Reject a held task."""
        return await self._call(ApiVerb.REJECT, RejectRequest(task_id=task_id, by=by, reason=reason), ApprovalOutcome)

    async def guard_check(
        self, skill: str, input: msgspec.Raw = EMPTY_OBJECT, *, submitter: str | None = None
    ) -> GuardCheckReply:
        """Which guard rule would apply to such a task, and why."""
        request = GuardCheckRequest(skill=skill, input=input, submitter=submitter)
        return await self._call(ApiVerb.GUARD_CHECK, request, GuardCheckReply)

    async def audit_verify(self) -> AuditReply:
        """Verify the event log's hash chain (and its anchor in NATS)."""
        return await self._call(ApiVerb.AUDIT_VERIFY, Empty(), AuditReply, timeout_s=600.0)

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
        subs = [
            await self.conn.nc.subscribe(subjects.events(task_id), cb=on_event),
            await self.conn.nc.subscribe(subjects.updates(task_id), cb=on_update),
        ]
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

    async def _subscribe_updates(self, task_ids: list[str], cb: Callable[[Msg], Awaitable[None]]) -> list[Any]:
        subjects = self.conn.subjects
        if len(task_ids) > PER_TASK_WAIT_SUBSCRIPTIONS:
            return [await self.conn.nc.subscribe(subjects.updates_all, cb=cb)]
        return [await self.conn.nc.subscribe(subjects.updates(t), cb=cb) for t in task_ids]

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
                    f"{self.conn.nc.max_payload / 1048576:.1f} MiB; pass large data by reference"
                )
            if current and (size + spec_size > budget or len(current) >= MAX_TASKS_PER_REQUEST):
                chunks.append(current)
                current, size = [], 0
            current.append(spec)
            size += spec_size
        if current:
            chunks.append(current)
        return chunks

    async def _call(self, verb: str, body: msgspec.Struct, reply_type: type[T], *, timeout_s: float | None = None) -> T:
        subject = self.conn.subjects.api(verb)
        payload = encode(body)
        try:
            for pause_s in NO_RESPONDERS_RETRIES_S:
                try:
                    msg = await self.conn.nc.request(
                        subject, payload, timeout=timeout_s or self._timeout_s, headers=headers_for()
                    )
                    break
                except nats.errors.NoRespondersError:
                    # nats-server can answer "no responders" for a moment after a subscriber appeared
                    # (seen about once in 300 fresh subscriptions here); only a repeated answer counts.
                    if pause_s is None:
                        raise CoordinatorUnavailableError(
                            f"no coordinator is answering on {subject}; start one with `claw coordinator start` "
                            "(or a whole local cluster with `claw up`)"
                        ) from None
                    await asyncio.sleep(pause_s)
        except (nats.errors.TimeoutError, TimeoutError):
            raise RequestTimeoutError(
                f"the coordinator did not answer {verb} within {timeout_s or self._timeout_s:g} s; "
                "check it is running and healthy (`claw status`, its log)"
            ) from None
        reply = decode(msg.data, ApiReply)
        if reply.error is not None:
            raise error_for_code(reply.error.code, reply.error.message)
        return decode(reply.data, reply_type)


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
