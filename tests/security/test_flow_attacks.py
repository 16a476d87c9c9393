"""Flow control as an attacker on the bus would try it: permits for a node that does not exist (they
would never be given back), a forged usage report with absurd token counts (it would overflow the
totals), a forged cooldown of a year (it would stall every worker on the key), a task taking another
tenant's own limit key (it would spend that tenant's capacity)."""

from __future__ import annotations

import time

import msgspec
import pytest

from common import verbs
from common.api import PermitAcquireRequest
from common.config import ClawConfig
from common.errors import InvalidInputError
from common.flow import CooldownNotice, cooldown_subject
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online


async def test_a_permit_for_a_node_that_is_not_online_is_refused(config: ClawConfig) -> None:
    async with running_coordinator(config), connected_client(config) as client:
        with pytest.raises(InvalidInputError, match="not an online worker"):
            await client.call(
                verbs.PERMIT_ACQUIRE, PermitAcquireRequest(key="api:x", task_id="t", node_id="ghost", wait_s=0)
            )


async def test_a_forged_usage_report_with_absurd_tokens_is_quarantined_and_usage_goes_on(
    config: ClawConfig,
) -> None:
    async with (
        running_coordinator(config),
        running_worker(config) as worker,
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        [result] = await client.submit_many([spec("echo", {})])
        node = worker.node_id
        forged = {"kind": "usage", "event_id": "forged-1", "task_id": result.task_id, "attempt": 1,
                  "node_id": node, "at": time.time(), "input_tokens": 2**70, "output_tokens": 1}  # fmt: skip
        subject = client.conn.subjects.events(node, result.task_id)
        await client.conn.js.publish(subject, msgspec.json.encode(forged))
        entries = await eventually(lambda: client.quarantine_list(task_id=result.task_id), what="quarantined")
        assert entries[0].task_id == result.task_id and b"input_tokens" in entries[0].data
        rows = (await client.call(verbs.USAGE, verbs.USAGE.request())).rows
        assert all(r.input_tokens < 2**62 for r in rows)


async def test_a_forged_cooldown_of_a_year_stalls_a_worker_for_max_cooldown_s_at_most(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config) as worker, connected_client(config) as client:
        notice = CooldownNotice(key="llm:victim", until=time.time() + 365 * 86400, reason="forged")
        await client.conn.nc.publish(cooldown_subject(client.conn.subjects.prefix), msgspec.json.encode(notice))
        left = await eventually(lambda: worker.flow.cooling_for(["llm:victim"]), what="the notice received")
        assert left <= config.flow.max_cooldown_s


async def test_a_task_cannot_take_another_tenants_own_limit_key(config: ClawConfig) -> None:
    """Adding `tenant:acme` to one's own tasks would spend acme's limit and stall acme's work."""
    async with running_coordinator(config), connected_client(config) as client:
        with pytest.raises(InvalidInputError, match="another tenant's own key"):
            await client.submit(spec("echo", limit_keys=["tenant:acme"]), tenant="mallory")
        with pytest.raises(InvalidInputError, match="another tenant's own key"):
            await client.submit(spec("echo", limit_keys=["tenant:acme"]))  # the default tenant
        own = await client.submit(spec("echo", limit_keys=["tenant:acme"]), tenant="acme")
        assert own.task_id
