"""Per-tenant quotas checked at submit: `max_queued` refuses a request whole, nothing stored."""

from __future__ import annotations

from collections import Counter

from common.config import TenantSettings
from common.errors import ClawError, QuotaExceededError
from coordinator.task_book import TaskBook
from storage.records import EventRecord, TaskRecord


class TenantQuotas:
    """The submit gate's quota half: how many tasks of a tenant may wait (holds nothing back)."""

    def __init__(self, settings: TenantSettings, book: TaskBook) -> None:
        self._settings = settings
        self._book = book

    def setting(self, tenant: str, field: str) -> str:
        """The config key a tenant's quota `field` comes from, for error messages."""
        where = f"quotas.{tenant}" if tenant in self._settings.quotas else "default_quota"
        return f"tenants.{where}.{field}"

    def refusal(self, new: list[TaskRecord], added: Counter[str]) -> ClawError | None:
        """A `QuotaExceededError` naming the quota when `new` would take a tenant past `max_queued`."""
        for tenant, count in Counter(r.tenant for r in new).items():
            limit = self._settings.quota(tenant).max_queued
            if limit is None:
                continue
            waiting = self._book.waiting_of_tenant(tenant) + added[tenant]
            if waiting + count > limit:
                return QuotaExceededError(
                    f"quota exceeded: tenant '{tenant}' has {waiting} tasks queued and its max_queued is {limit} "
                    f"({self.setting(tenant, 'max_queued')}); this request adds {count}. Nothing in this request "
                    "was submitted: retry once some have run, or raise the quota"
                )
        return None

    def hold(self, new: list[TaskRecord]) -> list[EventRecord]:
        """Quotas hold nothing back (the fair-share dispatcher does)."""
        return []

    def adopt(self, stuck: list[TaskRecord]) -> list[TaskRecord]:
        """Every task pending too long is published again."""
        return stuck
