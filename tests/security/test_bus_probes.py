"""Issue 11's probes (items 1-3), each tried with the credentials of every role it should fail for and
with none, against a real cluster with authentication: each is refused, nothing changes in the
database, no task runs, and the refusal is in a log (nats-server's, or the coordinator's security
events). Each is then done once with the role that may, to show it works. Runs on uvloop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import pytest
from structlog.testing import capture_logs

from cli.credentials import issue
from common import verbs
from common.api import ApproveRequest, PermitAcquireRequest, PermitReleaseRequest
from common.errors import ClawError, InvalidInputError, PermissionDeniedError
from common.events import TaskLog, TaskSucceeded
from common.ids import new_id
from common.models import NodeHeartbeat
from common.states import NodeStatus, TaskState
from communication.api_client import ClawClient
from communication.codec import encode
from tests.helpers import eventually, spec
from tests.security.bus import PREFIX, SecuredCluster, secured_cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SecuredCluster]:
    async with secured_cluster(tmp_path) as running:
        yield running


async def _no_connection(cluster: SecuredCluster) -> None:
    """The probe without credentials: the server does not even let it connect."""
    with pytest.raises(Exception, match="(?i)authorization"):
        async with cluster.connect(None):
            pass


async def _state(client: ClawClient, task_id: str) -> TaskState | None:
    return (await client.task_states([task_id])).get(task_id)


async def _running(cluster: SecuredCluster, client: ClawClient) -> str:
    """A task running on w1 (until cancelled)."""
    task_id = (await client.submit(spec("probe.wait", {"seconds": 120}))).task_id
    await eventually(lambda: task_id in cluster.ran, what="the task running on w1", timeout_s=30)
    await eventually(lambda: _is(client, task_id, TaskState.RUNNING), what="recorded running", timeout_s=30)
    return task_id


async def _is(client: ClawClient, task_id: str, state: TaskState) -> bool:
    return await _state(client, task_id) == state


async def test_a_task_published_straight_onto_the_tasks_subject_never_runs(cluster: SecuredCluster) -> None:
    await _no_connection(cluster)
    before = cluster.db_counts()
    message = b'{"task_id": "01PROBE", "skill": "probe.destroy", "input": {"what": "everything"}}'
    for name in ("w2", "alice", "cli", "vic", "bob", "adam"):
        async with cluster.connect(name) as nc:
            js = nc.jetstream(timeout=2)
            with pytest.raises(nats.errors.Error):  # a refused publish gets no ack: nats-py times out
                await js.publish(f"{PREFIX}.tasks.normal.probe-destroy", message)
        await eventually(
            lambda: len(cluster.violations("Publish", '"claw.tasks.normal.probe-destroy"')) >= 1, what="refusal"
        )
    assert len(cluster.violations("Publish", '"claw.tasks.normal.probe-destroy"')) == 6
    assert cluster.ran == [] and cluster.db_counts() == before

    # The way that works: submitted by a submitter, approved by two other approvers, then it runs.
    async with cluster.client("alice") as alice, cluster.client("bob") as bob, cluster.client("carol") as carol:
        held = await alice.submit(spec("probe.destroy", {"what": "the old table"}))
        assert held.state == TaskState.WAITING_APPROVAL
        await bob.approve(held.task_id)
        await carol.approve(held.task_id)
        assert await alice.wait([held.task_id], timeout_s=30) == {held.task_id: TaskState.SUCCEEDED}
    assert cluster.ran == [held.task_id]


async def test_forged_outcomes_and_log_lines_are_refused_and_change_nothing(cluster: SecuredCluster) -> None:
    await _no_connection(cluster)
    async with cluster.client("alice") as alice:
        task_id = await _running(cluster, alice)
        before = await alice.get_task(task_id)

        def forged(node: str, kind: type[Any] = TaskSucceeded) -> bytes:
            fields: dict[str, Any] = {"event_id": new_id(), "task_id": task_id, "attempt": 1, "node_id": node,
                                      "at": time.time()}  # fmt: skip
            if kind is TaskSucceeded:
                fields |= {"result": msgspec.Raw(b'{"forged": true}'), "started_at": time.time()}
            else:
                fields |= {"message": "approved by CFO"}
            return encode(kind(**fields))

        # Under w1's subject: the server refuses every role but w1's (and the coordinator's).
        for name in ("w2", "alice", "cli", "vic"):
            async with cluster.connect(name) as nc:
                await nc.publish(f"{PREFIX}.events.w1.{task_id}", forged("w1"))
                await nc.publish(f"{PREFIX}.events.w1.{task_id}", forged("w1", TaskLog))
                await nc.flush()
        await eventually(
            lambda: len(cluster.violations("Publish", f'"claw.events.w1.{task_id}"')) >= 8, what="8 refusals"
        )
        # Under its own node id, an attacker's worker speaks for an attempt w1 holds: the coordinator
        # refuses (a security event), and so it does for a body that names another node than its subject.
        with capture_logs() as logs:
            async with cluster.connect("w2") as nc:
                js = nc.jetstream()
                await js.publish(f"{PREFIX}.events.w2.{task_id}", forged("w2"))
                await js.publish(f"{PREFIX}.events.w2.{task_id}", forged("w2", TaskLog))
                await js.publish(f"{PREFIX}.events.w2.{task_id}", forged("w1"))
            refusals = await eventually(
                lambda: [e for e in logs if e["event"] == "security.event_refused"][2:], what="3 refusals"
            )
        assert {r["node_id"] for r in refusals} <= {"w1", "w2"}
        async with cluster.client("oscar") as oscar:  # reading the quarantine is an operator's
            quarantined = await oscar.quarantine_list(task_id=task_id)
        assert len(quarantined) == 3 and all(q.reason.startswith("refused:") for q in quarantined)
        after = await alice.get_task(task_id)
        assert after.state == TaskState.RUNNING and b"forged" not in bytes(after.result or b"")
        assert [e.kind for e in after.events] == [e.kind for e in before.events]
        assert not any("CFO" in bytes(e.data or b"").decode() for e in after.events)

    # w1's own report counts: cancelled by an operator, its worker confirms, the task ends.
    async with cluster.client("oscar") as oscar:
        await oscar.cancel(task_id)
        assert await oscar.wait([task_id], timeout_s=30) == {task_id: TaskState.CANCELLED}


def _beat(node_id: str, interval_s: float) -> bytes:
    now = time.time()
    return encode(
        NodeHeartbeat(
            node_id=node_id, hostname="h", pid=1, version="0", status=NodeStatus.OFFLINE, skills=[], capacity=1,
            running=0, interval_s=interval_s, started_at=now, sent_at=now,
        )
    )  # fmt: skip


async def test_a_forged_heartbeat_cannot_take_a_live_node_offline(cluster: SecuredCluster) -> None:
    await _no_connection(cluster)
    async with cluster.client("alice") as alice:
        task_id = await _running(cluster, alice)
        for name in ("w2", "alice", "cli", "vic"):
            async with cluster.connect(name) as nc:
                await nc.publish(f"{PREFIX}.nodes.heartbeat.w1", _beat("w1", 0.001))
                await nc.flush()
        await eventually(lambda: len(cluster.violations("Publish", '"claw.nodes.heartbeat.w1"')) >= 4, what="4")
        with capture_logs() as logs:
            async with cluster.connect("w2") as nc:
                await nc.publish(f"{PREFIX}.nodes.heartbeat.w2", _beat("w1", 1.0))  # another node's body
                await nc.publish(f"{PREFIX}.nodes.heartbeat.w2", _beat("w2", 0.001))  # a tiny interval
                await nc.flush()
            await eventually(lambda: [e for e in logs if e["event"] == "security.heartbeat_refused"][1:], what="2")
        # The node stays online through more than its offline window, and its task is not reclaimed.
        window_s = 10 * 0.2
        deadline = time.monotonic() + 2 * window_s
        while time.monotonic() < deadline:  # a condition that must hold throughout, polled
            [w1] = [n for n in await alice.nodes() if n.node_id == "w1"]
            assert w1.status == NodeStatus.ONLINE
            await asyncio.sleep(0.2)
        task = await alice.get_task(task_id)
        assert task.state == TaskState.RUNNING and task.attempts == 1 and cluster.ran == [task_id]
        assert all(n.node_id != "w2" for n in await alice.nodes())  # w2's forged beats registered nothing


async def test_approvals_need_distinct_approvers_and_never_the_submitter(cluster: SecuredCluster) -> None:
    async with cluster.client("bob") as bob, cluster.client("carol") as carol:
        held = (await bob.submit(spec("probe.destroy", {"what": "x"}))).task_id
        before = cluster.db_counts()
        with pytest.raises(PermissionDeniedError, match="bob submitted task .* and may not approve it"):
            await bob.approve(held)
        for name in ("alice", "oscar", "adam", "cli"):
            async with cluster.client(name) as other:
                with pytest.raises(PermissionDeniedError, match=f"approve needs the approver role; {name} holds"):
                    await other.approve(held)
        async with cluster.client("vic") as vic:
            with pytest.raises(PermissionDeniedError, match="approve needs the approver role"):
                await vic.approve(held)
        first = await carol.approve(held)
        assert first.approved_by == ["carol"] and first.state == TaskState.WAITING_APPROVAL
        with pytest.raises(InvalidInputError, match="carol already approved"):
            await carol.approve(held)
        # `carol ` and `Carol` cannot be issued: a name is one token, compared case-blind.
        for name in ("carol ", "Carol"):
            with pytest.raises(ClawError):
                issue(cluster.auth_dir, name=name, roles=["approver"], out=cluster.tmp_path / f"{name}.creds",
                      prefix=PREFIX)  # fmt: skip
        assert cluster.ran == [] and await _state(bob, held) == TaskState.WAITING_APPROVAL
        assert cluster.db_counts()[0] == before[0]

        # A second, distinct approver, issued while the cluster runs (no restart): released, it runs.
        issue(cluster.auth_dir, name="dave", roles=["approver"], out=cluster.auth_dir / "dave.creds", prefix=PREFIX)
        async with cluster.client("dave") as dave:
            second = await dave.approve(held)
        assert second.approved_by == ["carol", "dave"]
        assert await bob.wait([held], timeout_s=30) == {held: TaskState.SUCCEEDED}
    assert cluster.ran == [held]


async def test_cancel_purge_and_disable_need_their_roles(cluster: SecuredCluster) -> None:
    async with cluster.client("alice") as alice:
        task_id = await _running(cluster, alice)
    before = cluster.db_counts()
    wrong = {"task_cancel": ["alice", "cli", "adam"], "dlq_purge": ["alice", "oscar", "bob"],
             "skill_toggle": ["alice", "oscar", "carol"]}  # fmt: skip
    with capture_logs() as logs:
        for verb, names in wrong.items():
            for name in names:
                async with cluster.client(name) as client:
                    with pytest.raises(PermissionDeniedError, match=f"{verb} needs the"):
                        await _call(client, verb, task_id)
        refused = [e for e in logs if e["event"] == "security.api_refused"]
    assert len(refused) == 9 and {e["verb"] for e in refused} == set(wrong)
    async with cluster.client("vic") as vic:  # a viewer's credentials do not even reach the coordinator
        for verb in wrong:
            with pytest.raises(PermissionDeniedError, match=f"{verb} needs the"):
                await _call(vic, verb, task_id)
    async with cluster.connect("w2") as nc:  # a worker may not call the API at all
        await nc.publish(f"{PREFIX}.api.w2.task_cancel", b'{"task_id": "x"}')
        await nc.flush()
    await eventually(lambda: cluster.violations("Publish", '"claw.api.w2.task_cancel"'), what="refused")
    async with cluster.client("alice") as alice:
        assert await _state(alice, task_id) == TaskState.RUNNING
        assert [s.entry.name for s in await alice.skills() if not s.entry.enabled] == []
    assert cluster.db_counts() == before

    # With the roles: an operator cancels, an admin purges and disables.
    async with cluster.client("oscar") as oscar, cluster.client("adam") as adam:
        await oscar.cancel(task_id)
        assert await oscar.wait([task_id], timeout_s=30) == {task_id: TaskState.CANCELLED}
        assert await adam.dlq_purge() == 0
        await adam.set_skill_enabled("echo", enabled=False)
        assert "echo" in [s.entry.name for s in await adam.skills() if not s.entry.enabled]


async def _call(client: ClawClient, verb: str, task_id: str) -> Any:
    if verb == "task_cancel":
        return await client.cancel(task_id)
    if verb == "dlq_purge":
        return await client.dlq_purge()
    return await client.set_skill_enabled("echo", enabled=False)


async def test_flow_control_permits_are_a_workers_and_bound_to_its_node(cluster: SecuredCluster) -> None:
    acquire = PermitAcquireRequest(key="api:probe", task_id="t1", node_id="w2", wait_s=0)
    # A person, even an admin, may not take a worker's permits (they would never be given back).
    for name in ("alice", "adam", "oscar"):
        async with cluster.client(name) as person:
            with pytest.raises(PermissionDeniedError, match="permit_acquire needs the worker role"):
                await person.call(verbs.PERMIT_ACQUIRE, acquire)
    # w1 asks naming w2 (offline): the coordinator takes the node from w1's credentials and grants it to w1.
    async with cluster.client("w1") as w1, cluster.client("w2") as w2:
        granted = await w1.call(verbs.PERMIT_ACQUIRE, acquire)
        assert granted.permit_id is not None
        # Another worker cannot give w1's permit back (nor report usage on it), whatever node it names.
        release = PermitReleaseRequest(permit_id=granted.permit_id, input_tokens=10**9, node_id="w1")
        with capture_logs() as logs, pytest.raises(PermissionDeniedError, match="given to another node than w2"):
            await w2.call(verbs.PERMIT_RELEASE, release)
        assert [e["holder"] for e in logs if e["event"] == "security.permit_refused"] == ["w1"]
        # w1 gives it back: the permit was its own.
        back = await w1.call(verbs.PERMIT_RELEASE, PermitReleaseRequest(permit_id=granted.permit_id))
        assert back.permit_id == granted.permit_id and back.reason == ""


async def test_a_submit_is_for_the_tenant_bound_to_the_credentials_whatever_it_names(cluster: SecuredCluster) -> None:
    # Issued while the cluster runs: tina submits for acme, and only for acme.
    issue(cluster.auth_dir, name="tina", roles=["submitter"], out=cluster.auth_dir / "tina.creds", prefix=PREFIX,
          tenant="acme")  # fmt: skip
    async with cluster.client("tina") as tina:
        before = cluster.db_counts()
        with pytest.raises(InvalidInputError, match="tenant 'globex' is not yours: your credentials are for tenant"):
            await tina.submit(spec("echo", {}), tenant="globex")
        assert cluster.db_counts()[0] == before[0]  # nothing stored
        unnamed = await tina.submit(spec("echo", {}))
        named = await tina.submit(spec("echo", {}), tenant="acme")
        for submitted in (unnamed, named):
            assert (await tina.get_task(submitted.task_id)).tenant == "acme"
    # An identity bound to no tenant names one, as before.
    async with cluster.client("alice") as alice:
        other = await alice.submit(spec("echo", {}), tenant="globex")
        assert (await alice.get_task(other.task_id)).tenant == "globex"


async def test_the_identity_is_the_credentials_whatever_name_the_request_types(cluster: SecuredCluster) -> None:
    async with cluster.client("alice") as alice, cluster.client("bob") as bob, cluster.client("carol") as carol:
        # alice submits naming bob as the submitter: the task is alice's ...
        held = await alice.submit(spec("probe.destroy", {"what": "x"}), submitter="bob")
        assert cluster.submitter_of(held.task_id) == "alice"
        # ... so bob may approve it, and his approval typed as carol's counts as bob's, once.
        first = await bob.call(verbs.APPROVE, ApproveRequest(task_id=held.task_id, by="carol"))
        assert first.approved_by == ["bob"] and first.state == TaskState.WAITING_APPROVAL
        with pytest.raises(InvalidInputError, match="bob already approved"):
            await bob.call(verbs.APPROVE, ApproveRequest(task_id=held.task_id, by="dave"))
        assert cluster.ran == []
        # Sending on another identity's subject is refused by the server, not merely by the coordinator.
        async with cluster.connect("alice") as nc:
            await nc.publish(f"{PREFIX}.api.carol.approve", msgspec.json.encode({"task_id": held.task_id}))
            await nc.flush()
        await eventually(lambda: cluster.violations("Publish", '"claw.api.carol.approve"'), what="refused")
        # carol's own approval is the second, distinct one: it runs.
        second = await carol.approve(held.task_id)
        assert second.approved_by == ["bob", "carol"]
        assert await alice.wait([held.task_id], timeout_s=30) == {held.task_id: TaskState.SUCCEEDED}
    assert cluster.ran == [held.task_id]
