"""Human approval of held tasks.

A task the guard holds is `waiting_approval`: persisted, but not published, so it holds no queue
slot and no ack timer. Each `approve` records who and when; once as many *distinct* people as the
rule asks for have approved (identities compared case-blind; the submitter's own approval counts
only where `auth.self_approval` allows it), the task is released (`pending`, then published). One `reject` ends it
`rejected`. A task still waiting after `coordinator.approval_ttl_s` (24 h) is rejected as expired.
Every decision is an event in the hash-chained event log.
"""

from __future__ import annotations

import bisect

from common.api import ApprovalOutcome, ApprovalView
from common.clock import Clock
from common.errors import InvalidInputError, PermissionDeniedError, TaskNotFoundError
from common.event_kinds import EventKind
from common.identity import normalise
from common.log import get_logger
from common.states import TaskState
from coordinator.submission import SubmitPipeline
from coordinator.task_book import TaskBook
from storage.records import EventRecord, TaskRecord, WriteBatch
from storage.task_queries import TaskQueries
from storage.task_writer import TaskWriter

log = get_logger("coordinator.approvals")

INPUT_SUMMARY_CHARS = 200


class ApprovalDesk:
    """Lists, approves, rejects and expires held tasks."""

    def __init__(
        self,
        book: TaskBook,
        writer: TaskWriter,
        queries: TaskQueries,
        pipeline: SubmitPipeline,
        clock: Clock,
        *,
        self_approval: bool = False,
    ) -> None:
        self._self_approval = self_approval
        self._book = book
        self._writer = writer
        self._queries = queries
        self._pipeline = pipeline
        self._clock = clock

    async def waiting(self) -> list[ApprovalView]:
        """Every held task, oldest first."""
        return await self._views(self._book.with_state(TaskState.WAITING_APPROVAL))

    async def waiting_page(self, *, after: str | None, limit: int) -> tuple[list[ApprovalView], int]:
        """Up to `limit` held tasks with ids above `after`, oldest first; and how many are held."""
        records = self._book.with_state(TaskState.WAITING_APPROVAL)
        start = 0 if after is None else bisect.bisect_right([r.task_id for r in records], after)
        return await self._views(records[start : start + limit]), len(records)

    async def _views(self, records: list[TaskRecord]) -> list[ApprovalView]:
        decisions = await self._queries.approvals_of([r.task_id for r in records])
        return [
            ApprovalView(
                task_id=r.task_id,
                skill=r.skill,
                risk=r.risk,
                rule=r.guard_rule,
                input_summary=_summary(r.input),
                submitter=r.submitter,
                since=r.created_at,
                expires_at=r.held_until,
                approvals_needed=r.approvals_needed,
                approved_by=_approvers(decisions[r.task_id]),
            )
            for r in records
        ]

    async def approve(self, task_id: str, *, by: str, note: str | None) -> ApprovalOutcome:
        """Record `by`'s approval; release the task once enough distinct people approved."""
        async with self._book.lock:
            record = await self._held(task_id)
            approvers = _approvers((await self._queries.approvals_of([task_id]))[task_id])
            if (
                not self._self_approval
                and record.submitter is not None
                and normalise(by) == normalise(record.submitter)
            ):
                log.warning("security.self_approval_refused", task_id=task_id, by=by)
                raise PermissionDeniedError(
                    f"{by} submitted task {task_id} and may not approve it: another approver must "
                    "(the policy auth.self_approval allows it)"
                )
            if normalise(by) in {normalise(a) for a in approvers}:
                raise InvalidInputError(
                    f"{by} already approved task {task_id}; it needs {record.approvals_needed} different approvers"
                )
            approvers.append(by)
            now = self._clock.now()
            batch = WriteBatch(approvals=[(task_id, by, "approve", note, now)])
            data = {"by": by, "note": note, "count": len(approvers)}
            batch.events.append(EventRecord.of(EventKind.APPROVED, record.task_id, now, data=data))
            released = len(approvers) >= record.approvals_needed
            if released:
                batch.events.append(self._book.move(record, TaskState.PENDING, at=now, kind=EventKind.RELEASED))
                record.held_until = None
                batch.touch(record)
            await self._writer.write_batch(batch)
        if released:
            await self._pipeline.publish_pending([record])
        log.info("task.approved", task_id=task_id, by=by, approvals=len(approvers), needed=record.approvals_needed)
        return ApprovalOutcome(
            task_id=task_id, state=record.state, approved_by=approvers, approvals_needed=record.approvals_needed
        )

    async def reject(self, task_id: str, *, by: str, reason: str) -> ApprovalOutcome:
        """End a held task `rejected`, recording who and why."""
        async with self._book.lock:
            record = await self._held(task_id)
            now = self._clock.now()
            batch = WriteBatch(approvals=[(task_id, by, "reject", reason, now)])
            self._finish_rejected(record, batch, now, kind=EventKind.REJECTED, by=by, reason=reason)
            await self._writer.write_batch(batch)
            self._book.release_finished([record])
        log.info("task.rejected", task_id=task_id, by=by, reason=reason)
        return ApprovalOutcome(task_id=task_id, state=record.state, approvals_needed=record.approvals_needed)

    async def expire(self) -> int:
        """Reject held tasks whose approval window passed; returns how many."""
        now = self._clock.now()
        async with self._book.lock:
            due = [
                r
                for r in self._book.with_state(TaskState.WAITING_APPROVAL)
                if r.held_until is not None and r.held_until <= now
            ]
            if not due:
                return 0
            batch = WriteBatch()
            for record in due:
                self._finish_rejected(record, batch, now, kind=EventKind.EXPIRED, by=None, reason="approval expired")
            await self._writer.write_batch(batch)
            self._book.release_finished(due)
        log.warning("approvals.expired", count=len(due))
        return len(due)

    def _finish_rejected(
        self, record: TaskRecord, batch: WriteBatch, now: float, *, kind: EventKind, by: str | None, reason: str
    ) -> None:
        record.finished_at = now
        record.held_until = None
        record.error_type, record.error_message = "Rejected", reason
        batch.events.append(
            self._book.move(record, TaskState.REJECTED, at=now, kind=kind, data={"by": by, "reason": reason})
        )
        batch.touch(record)

    async def _held(self, task_id: str) -> TaskRecord:
        record = await self._book.find(task_id)
        if record is None:
            raise TaskNotFoundError(f"no task with id {task_id}; `claw approvals` lists the held ones")
        if record.state != TaskState.WAITING_APPROVAL:
            raise InvalidInputError(f"task {task_id} is {record.state.value}, not waiting for approval")
        return record


def _approvers(decisions: list[tuple[str, str, str | None, float]]) -> list[str]:
    return [approver for approver, decision, _, _ in decisions if decision == "approve"]


def _summary(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= INPUT_SUMMARY_CHARS else flat[: INPUT_SUMMARY_CHARS - 1] + "…"
