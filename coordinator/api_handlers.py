"""The coordinator's answers to the API verbs: one method per verb, from request Struct to reply Struct.

Each method is marked `@serves(verbs.X)` with the verb it answers (`common/verbs.py` declares them);
the `ApiServer` decodes the request, checks ids, maps errors, fits the reply and traces around it.
The verbs of the quarantine are served by `QuarantineDesk`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

import msgspec

from common import __version__, api, verbs
from common.config import ClawConfig
from common.errors import InvalidInputError, TaskNotFoundError
from common.event_kinds import EventKind
from common.ids import ulid_floor
from common.log import get_logger
from common.models import (
    ClusterStatus,
    DeadLetterView,
    JobView,
    ListenerView,
    NatsServerInfo,
    ReplicationView,
    StorageFaultView,
    TaskView,
)
from common.skills import RegistryEntry, Risk, Runtime, SkillManifest
from common.states import TaskState
from communication.connection import NatsConnection
from communication.monitoring import fetch_server_info
from communication.payload_limits import reply_budget
from communication.trace_context import start_task_span
from coordinator.admission import Admission
from coordinator.alerts import AlertMonitor
from coordinator.api_routes import serves
from coordinator.approvals import ApprovalDesk
from coordinator.audit import Auditor
from coordinator.dead_letters import DeadLetterOffice
from coordinator.input_offload import InputOffloader
from coordinator.node_control import NodeControlDesk
from coordinator.node_registry import NodeRegistry
from coordinator.operations import RERUNNABLE, NotDeadError, TaskOperations
from coordinator.paging import offset_cursor, offset_page, page_limit, take_page
from coordinator.queue_probe import QueueProbe
from coordinator.reply_fit import fit_submit_reply, fit_task_view, max_submit_results
from coordinator.skill_catalog import SkillCatalog
from coordinator.submission import SubmitPipeline
from coordinator.task_book import TaskBook
from coordinator.task_wire import default_backoff
from storage.artifact_index import ArtifactIndex
from storage.artifacts import ArtifactStore
from storage.records import TaskRecord
from storage.task_queries import TaskQueries

log = get_logger("coordinator.api_handlers")

# The most task ids one `task_states` request may name: its reply must fit one NATS message.
MAX_STATE_IDS = 10_000


class ApiHandlers:
    """One method per verb, each marked with the verb it serves (`ApiRoutes.of` collects them)."""

    def __init__(
        self,
        *,
        config: ClawConfig,
        node_id: str,
        conn: NatsConnection,
        admission: Admission,
        pipeline: SubmitPipeline,
        store: TaskQueries,
        artifact_index: ArtifactIndex,
        book: TaskBook,
        registry: NodeRegistry,
        operations: TaskOperations,
        dead_letters: DeadLetterOffice,
        catalog: SkillCatalog,
        approvals: ApprovalDesk,
        auditor: Auditor,
        probe: QueueProbe,
        alerts: AlertMonitor,
        metrics_port: Callable[[], int | None],
        artifacts: ArtifactStore | None = None,
        node_control: NodeControlDesk,
        jobs: Callable[[], list[JobView]],
        listeners: Callable[[], list[ListenerView]],
        storage_fault: Callable[[], StorageFaultView | None],
        replication: Callable[[], Awaitable[ReplicationView | None]] | None = None,
    ) -> None:
        self._storage_fault = storage_fault
        self._replication = replication
        self._config = config
        self._node_id = node_id
        self._conn = conn
        self._admission = admission
        self._pipeline = pipeline
        self._store = store
        self._artifact_index = artifact_index
        self._jobs = jobs
        self._listeners = listeners
        self._book = book
        self._registry = registry
        self._operations = operations
        self._dead_letters = dead_letters
        self._catalog = catalog
        self._approvals = approvals
        self._auditor = auditor
        self._probe = probe
        self._alerts = alerts
        self._metrics_port = metrics_port
        self._node_control = node_control
        self._offloader = InputOffloader(artifacts, default_backoff(config.coordinator), lambda: conn.nc.max_payload)

    def _budget(self) -> int:
        """The bytes a reply body may take: it must fit the server's max_payload."""
        return reply_budget(self._conn.nc.max_payload)

    @serves(verbs.PING)
    async def ping(self, request: api.Empty) -> api.PingReply:
        """Liveness and version."""
        return api.PingReply(
            version=__version__,
            node_id=self._node_id,
            skills=sorted(self._registry.online_skills()),
            metrics_port=self._metrics_port(),
        )

    @serves(verbs.SUBMIT, fit=fit_submit_reply)
    async def submit(self, request: api.SubmitRequest) -> api.SubmitReply:
        """Admit, persist and publish tasks."""
        most = max_submit_results(self._budget())
        if len(request.tasks) > most:
            raise InvalidInputError(
                f"the request holds {len(request.tasks)} tasks; the answer to at most {most} fits one NATS "
                "message: split it (ClawClient.submit_many does)"
            )
        records = self._admission.admit(request)
        await self._offloader.offload_oversize(records)
        own_trace = len(records) > 1  # a batch: a trace per task, linked to this request
        for record in records:
            record.span, record.trace_id, record.traceparent = start_task_span(
                "claw.task", functools.partial(_task_attributes, record), own_trace=own_trace
            )
        results = await self._pipeline.submit(records)
        return api.SubmitReply(results=results)

    @serves(verbs.TASK_GET, fit=fit_task_view)
    async def task_get(self, request: api.TaskGetRequest) -> TaskView:
        """One task with its history."""
        # A submit answered `queued` may still wait a few ms for that to be written: write it
        # first, so a read never shows the task going back to `pending`.
        await self._pipeline.flush_queued()
        view = await self._store.get_task(request.task_id, history=request.history)
        if view is None:
            raise TaskNotFoundError(f"no task with id {request.task_id}; `claw task list` shows recent ones")
        return view

    @serves(verbs.TASK_LIST)
    async def task_list(self, request: api.TaskListRequest) -> api.TaskListReply:
        """A page of the newest tasks, filtered; the cursor is the last task id of the previous page."""
        limit = page_limit(request.limit)
        await self._pipeline.flush_queued()
        # A time window is a range of ids: ULIDs sort by the time they were made (the primary key's index).
        since = None if request.created_after is None else ulid_floor(request.created_after)
        until = None if request.created_before is None else ulid_floor(request.created_before)
        before = min((b for b in (request.cursor, until) if b is not None), default=None)
        rows = await self._store.list_tasks(
            state=request.state, skill=request.skill, limit=limit + 1, before=before, tenant=request.tenant,
            since=since,
        )  # fmt: skip
        tasks, more = take_page(rows, limit=limit, budget=self._budget(), what="task")
        total = None
        if request.cursor is None:
            total = await self._store.count_tasks(
                state=request.state, skill=request.skill, tenant=request.tenant, since=since, before=until
            )
        return api.TaskListReply(tasks=tasks, next_cursor=tasks[-1].task_id if more else None, total=total)

    @serves(verbs.TASK_STATES)
    async def task_states(self, request: api.TaskStatesRequest) -> api.TaskStatesReply:
        """Committed states of many tasks.

        Read from the database, not the working set: records in memory run ahead of their commit,
        and a client that saw "succeeded" here must find the result when it asks for the task.
        """
        if len(request.task_ids) > MAX_STATE_IDS:
            raise InvalidInputError(
                f"the request names {len(request.task_ids)} tasks; ask for at most {MAX_STATE_IDS} at a time"
            )
        return api.TaskStatesReply(states=await self._store.states(request.task_ids))

    @serves(verbs.NODES)
    async def nodes(self, request: api.NodesRequest) -> api.NodesReply:
        """A page of the node registry, with what the coordinator asks of each node (a small list in
        memory: the cursor is an offset)."""
        views = self._node_control.views_with_control()
        page, cursor = offset_page(
            views, cursor=request.cursor, limit=page_limit(request.limit), budget=self._budget(), what="node"
        )
        return api.NodesReply(nodes=page, next_cursor=cursor, total=len(views))

    @serves(verbs.NODE_CONTROL)
    async def node_control(self, request: api.NodeControlRequest) -> api.NodeControlReply:
        """Pause, drain or resume a node: recorded, sent to it, answered with what it does now."""
        return await self._node_control.set(request.node_id, request.control, by=request.by)

    @serves(verbs.STATUS)
    async def status(self, request: api.StatusRequest) -> api.StatusReply:
        """The cluster overview, with rates over the tasks that finished in the requested window."""
        queues, dead_letters, window, nats_info = await asyncio.gather(
            self._probe.depths(self._registry.known_skills()),
            self._probe.dead_letters(),
            self._alerts.window_stats(request.window_s),
            self._nats_info(),
        )
        views = self._registry.views()
        return api.StatusReply(
            status=ClusterStatus(
                coordinator_version=__version__,
                nodes_online=self._registry.online_count(),
                nodes_total=len(views),
                tasks_by_state=self._book.counts(),
                queues=queues,
                nats=nats_info,
                window=window,
                dlq_messages=dead_letters,
                alerts=self._alerts.active(),
                metrics_port=self._metrics_port(),
                jobs=self._jobs(),
                listeners=self._listeners(),
                storage_fault=self._storage_fault(),
                replication=None if self._replication is None else await self._replication(),
            )
        )

    @serves(verbs.TASK_CANCEL)
    async def task_cancel(self, request: api.TaskCancelRequest) -> api.TaskActionReply:
        """Cancel a task; a running attempt is stopped on its worker."""
        state = await self._operations.cancel(request.task_id, reason=request.reason, by=request.by)
        return api.TaskActionReply(task_id=request.task_id, state=state)

    @serves(verbs.TASK_RETRY)
    async def task_retry(self, request: api.TaskRetryRequest) -> api.TaskActionReply:
        """Re-run a failed, dead or cancelled task as a new attempt series (a dead one leaves the DLQ)."""
        record = await self._book.find(request.task_id)
        letter = None
        if record is not None and record.state == TaskState.DEAD:
            letter = await self._dead_letters.letter_of(record.task_id, record.skill)
        state, changed = await self._operations.rerun(request.task_id, kind=EventKind.RETRY, by=request.by, note={})
        if changed and letter is not None:
            await self._dead_letters.remove(letter)
        return api.TaskActionReply(task_id=request.task_id, state=state, changed=changed)

    @serves(verbs.DLQ_LIST)
    async def dlq_list(self, request: api.DlqListRequest) -> api.DlqListReply:
        """A page of dead letters, newest first; the cursor is a stream sequence to go on below."""
        limit = page_limit(request.limit)
        views, resume = await self._dead_letters.list_page(
            skill=request.skill, limit=limit + 1, before=_seq_cursor(request.cursor)
        )
        letters, more = take_page(views, limit=limit, budget=self._budget(), what="dead letter")
        cursor = str(letters[-1].seq) if more else None if resume is None else str(resume)
        total = await self._dead_letters.total() if request.cursor is None and request.skill is None else None
        return api.DlqListReply(letters=letters, next_cursor=cursor, total=total)

    @serves(verbs.DLQ_REPLAY)
    async def dlq_replay(self, request: api.DlqReplayRequest) -> api.DlqReplayReply:
        """Replay dead tasks from the DLQ as new attempt series; replaying twice changes nothing.

        A replayed task's letter leaves the DLQ. `all` goes through one page of letters per request.
        """
        if request.all == (request.task_id is not None):
            raise InvalidInputError("name one dead task to replay, or ask for all of them (--all)")
        if request.task_id is not None:
            return api.DlqReplayReply(results=[await self._replay_one(request.task_id, request.by)])
        views, resume = await self._dead_letters.list_page(
            skill=request.skill, limit=page_limit(request.limit), before=_seq_cursor(request.cursor)
        )
        replies = [await self._replay(view, request.by) for view in views if view.letter.task_id is not None]
        results = [reply for reply in replies if reply is not None]
        return api.DlqReplayReply(results=results, next_cursor=None if resume is None else str(resume))

    async def _replay_one(self, task_id: str, by: str | None) -> api.TaskActionReply:
        record = await self._book.find(task_id)
        letter = None if record is None else await self._dead_letters.letter_of(task_id, record.skill)
        if record is not None and record.state not in RERUNNABLE:
            if letter is not None:
                await self._dead_letters.remove(letter)  # left by a crash after the re-run: stale
            return api.TaskActionReply(
                task_id=task_id, state=record.state, changed=False, note=f"already replayed (now {record.state.value})"
            )
        if letter is None:
            raise TaskNotFoundError(
                f"task {task_id} has no dead letter; `claw dlq list` shows them (`claw task retry` re-runs any "
                "failed, dead or cancelled task)"
            )
        reply = await self._replay(letter, by)
        if reply is None:
            raise TaskNotFoundError(f"no task with id {task_id}; `claw task list` shows recent ones")
        if not reply.changed and reply.state in RERUNNABLE:
            raise InvalidInputError(reply.note)  # a letter of a task that is not dead: nothing replayed
        return reply

    async def _replay(self, view: DeadLetterView, by: str | None) -> api.TaskActionReply | None:
        task_id = view.letter.task_id or ""
        try:
            state, changed = await self._operations.rerun(
                task_id, kind=EventKind.REPLAYED, by=by, note={"dlq_seq": view.seq}, only_dead=True
            )
        except NotDeadError as exc:
            # Only the coordinator writes a task's letter, when the task ends dead; workers may publish
            # (poison) letters on the skill's subject, so a letter naming a task that is cancelled,
            # failed or unknown is forged or stale: it re-runs nothing (a cancel stays a cancel).
            log.warning("security.dlq_letter_refused", task_id=task_id, dlq_seq=view.seq, error=str(exc))
            await self._dead_letters.remove(view)
            if exc.state is None:
                return None
            return api.TaskActionReply(task_id=task_id, state=exc.state, changed=False, note=str(exc))
        await self._dead_letters.remove(view)  # re-run now, or already earlier: the letter is history
        note = "" if changed else f"already replayed (now {state.value})"
        return api.TaskActionReply(task_id=task_id, state=state, changed=changed, note=note)

    @serves(verbs.DLQ_PURGE)
    async def dlq_purge(self, request: api.DlqPurgeRequest) -> api.DlqPurgeReply:
        """Drop dead letters."""
        purged = await self._dead_letters.purge(skill=request.skill, older_than_s=request.older_than_s)
        return api.DlqPurgeReply(purged=purged)

    @serves(verbs.SKILLS)
    async def skills(self, request: api.SkillsRequest) -> api.SkillsReply:
        """A page of registered skills (and skills only workers know), with the online nodes running each."""
        entries = self._catalog.search(request.search) if request.search else self._catalog.entries()
        if request.name is not None:
            entries = [e for e in entries if e.name == request.name]
        infos = [api.SkillInfo(entry=e, nodes=self._nodes_running(e.name)) for e in entries]
        registered = {e.name for e in self._catalog.entries()}
        for name in sorted(self._registry.online_skills() - registered):
            if (request.name is None or request.name == name) and not request.search:
                infos.append(api.SkillInfo(entry=self._worker_entry(name), nodes=self._nodes_running(name)))
        if request.name is not None and not infos:
            raise TaskNotFoundError(f"no skill called '{request.name}'; `claw skills list` shows them")
        page, cursor = offset_page(
            infos, cursor=request.cursor, limit=page_limit(request.limit), budget=self._budget(), what="skill"
        )
        return api.SkillsReply(skills=page, next_cursor=cursor, total=len(infos))

    @serves(verbs.SKILL_TOGGLE)
    async def skill_toggle(self, request: api.SkillToggleRequest) -> api.SkillsReply:
        """Enable or disable a skill (workers follow within a heartbeat)."""
        if not self._catalog.known(request.name) and request.name in self._registry.online_skills():
            entry = self._worker_entry(request.name)
            await self._catalog.register_worker_skill(entry.manifest, enabled=request.enabled, by=request.by)
        entry = await self._catalog.set_enabled(request.name, request.version, request.enabled, by=request.by)
        return api.SkillsReply(skills=[api.SkillInfo(entry=entry, nodes=self._nodes_running(entry.name))])

    @serves(verbs.SKILL_INSTALL)
    async def skill_install(self, request: api.SkillInstallRequest) -> api.SkillInstallReply:
        """Register an uploaded skill (its files are in the skill-code store)."""
        entry, created = await self._catalog.install(
            request.manifest,
            checksum=request.checksum,
            archive=request.archive,
            by=request.by,
            uploaded_sha256=request.archive_sha256,
            allow_risk_change=request.allow_risk_change,
        )
        return api.SkillInstallReply(entry=entry, created=created)

    @serves(verbs.APPROVALS)
    async def approvals(self, request: api.ApprovalsRequest) -> api.ApprovalsReply:
        """A page of the tasks waiting for approval, oldest first; the cursor is the last task id."""
        limit = page_limit(request.limit)
        views, total = await self._approvals.waiting_page(after=request.cursor, limit=limit + 1)
        page, more = take_page(views, limit=limit, budget=self._budget(), what="held task")
        return api.ApprovalsReply(
            approvals=page,
            next_cursor=page[-1].task_id if more else None,
            total=total if request.cursor is None else None,
        )

    @serves(verbs.APPROVE)
    async def approve(self, request: api.ApproveRequest) -> api.ApprovalOutcome:
        """One person's approval of a held task."""
        return await self._approvals.approve(request.task_id, by=request.by, note=request.note)

    @serves(verbs.REJECT)
    async def reject(self, request: api.RejectRequest) -> api.ApprovalOutcome:
        """Reject a held task."""
        return await self._approvals.reject(request.task_id, by=request.by, reason=request.reason)

    @serves(verbs.GUARD_CHECK)
    async def guard_check(self, request: api.GuardCheckRequest) -> api.GuardCheckReply:
        """Which guard rule would apply to a task, and why (nothing is submitted)."""
        try:
            parsed = msgspec.json.decode(request.input)
        except msgspec.DecodeError as exc:
            raise InvalidInputError(f"the input is not valid JSON: {exc}") from None
        risk, decision = self._admission.decide(request.skill, parsed, request.submitter)
        return api.GuardCheckReply(
            skill=request.skill,
            risk=risk.value,
            decision=api.GuardDecision(
                action=decision.action.value,
                rule=decision.rule,
                approvals=decision.approvals,
                reason=decision.reason,
                explanation=decision.explanation,
            ),
        )

    @serves(verbs.ARTIFACTS)
    async def artifacts(self, request: api.ArtifactsRequest) -> api.ArtifactsReply:
        """A task's artifacts (metadata; the bytes are in the artifact store)."""
        if await self._store.get_task(request.task_id, history=False) is None:
            raise TaskNotFoundError(f"no task with id {request.task_id}; `claw task list` shows recent ones")
        limit = page_limit(request.limit)
        rows, total = await self._artifact_index.artifacts_page(
            request.task_id, after=offset_cursor(request.cursor), limit=limit + 1
        )
        page, more = take_page([view for _, view in rows], limit=limit, budget=self._budget(), what="artifact")
        cursor = str(rows[len(page) - 1][0]) if more else None
        return api.ArtifactsReply(artifacts=page, next_cursor=cursor, total=total)

    @serves(verbs.ARTIFACT_STORE)
    async def artifact_store(self, request: api.Empty) -> api.ArtifactStoreReply:
        """The artifact store settings this coordinator (and, by convention, its workers) use."""
        return api.ArtifactStoreReply(settings=self._config.artifacts)

    @serves(verbs.AUDIT_VERIFY)
    async def audit_verify(self, request: api.Empty) -> api.AuditReply:
        """Walk the event log's hash chain and compare its head with the anchor in NATS."""
        return await self._auditor.verify()

    def _nodes_running(self, skill: str) -> list[str]:
        return [n.node_id for n in self._registry.views() if n.status != "offline" and skill in n.skills]

    def _worker_entry(self, name: str) -> RegistryEntry:
        version, risk = self._registry.advertised(name) or ("0.0.0", "write_external")
        manifest = SkillManifest(name=name, version=version, risk=Risk(risk), runtime=Runtime(python="worker:code"))
        return RegistryEntry(name=name, version=version, enabled=True, source="worker", checksum="", manifest=manifest)

    async def _nats_info(self) -> NatsServerInfo:
        monitor_url = self._config.nats.monitor_url
        version = self._conn.server_version
        if not monitor_url:
            return NatsServerInfo(
                version=version,
                error="monitoring URL not configured (nats.monitor_url / CLAW_NATS_MONITOR_URL)",
            )
        info = await fetch_server_info(monitor_url)
        return info if info.version else msgspec.structs.replace(info, version=version)


def _seq_cursor(cursor: str | None) -> int | None:
    """The stream sequence a DLQ cursor stands for (letters below it come next)."""
    if cursor is None:
        return None
    seq = offset_cursor(cursor)
    if seq == 0:
        raise InvalidInputError(f"'{cursor}' is not a cursor of the dead-letter list; pass back a next_cursor")
    return seq


def _task_attributes(record: TaskRecord) -> dict[str, str]:
    return {
        "claw.task_id": record.task_id,
        "claw.skill": record.skill,
        "claw.priority": record.priority.value,
        "claw.risk": record.risk or "",
    }
