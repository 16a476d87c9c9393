"""The coordinator believes only what a sender may say, also on a server without authentication:
the API identity is the request subject's, roles come from config, an event must come on its own
node's subject from the node holding the attempt, and a heartbeat's interval is bounded.

(On an authenticated server the permissions make the subjects true: tests/security.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from common.config import ClawConfig
from common.errors import PermissionDeniedError
from common.events import TaskSucceeded
from common.ids import new_id
from common.models import NodeHeartbeat
from common.states import NodeStatus, TaskState
from communication.codec import encode
from communication.nats_server import EmbeddedNatsServer
from tests.conftest import make_config
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online


def _config(nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, **auth: Any) -> ClawConfig:
    return make_config(nats_server, prefix, tmp_path, auth=auth)


async def test_roles_from_config_refuse_a_verb_with_one_line_naming_the_role(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = _config(nats_server, prefix, tmp_path, roles={"vic": ["viewer"], "sam": ["submitter"]})
    async with running_coordinator(config), connected_client(config, identity="vic") as vic:
        with pytest.raises(PermissionDeniedError) as refused:
            await vic.submit(spec("echo"))
        assert str(refused.value).startswith("submit needs the submitter role; vic holds viewer")
        with pytest.raises(PermissionDeniedError, match="dlq_purge needs the admin role; vic holds viewer"):
            await vic.dlq_purge()
        assert await vic.list_tasks() == []  # reading is what a viewer may do
        async with connected_client(config, identity="sam") as sam:
            with pytest.raises(PermissionDeniedError, match="task_cancel needs the operator role; sam holds submitter"):
                await sam.cancel(new_id())
            submitted = await sam.submit(spec("echo"), submitter="someone-else")
    assert submitted.task_id


async def test_the_submitter_cannot_approve_their_own_task_unless_the_policy_allows(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    from tests.integration.test_skills_and_guard import guarded_registry

    config = _config(nats_server, prefix, tmp_path)
    async with (
        running_coordinator(config),
        running_worker(config, skills=guarded_registry()),
        connected_client(config, identity="alice") as alice,
    ):
        await wait_nodes_online(alice, 1)
        held = await alice.submit(spec("db.drop", {"table": "t"}), submitter="mallory")
        with pytest.raises(PermissionDeniedError, match="alice submitted task .* and may not approve it"):
            await alice.approve(held.task_id)
        async with connected_client(config, identity="ALICE") as shouty:
            with pytest.raises(PermissionDeniedError, match="may not approve it"):
                await shouty.approve(held.task_id)
        assert (await alice.task_states([held.task_id]))[held.task_id] == TaskState.WAITING_APPROVAL
        [view] = await alice.approvals()
        assert view.submitter == "alice" and view.approved_by == []


async def test_a_forged_outcome_from_another_node_and_a_tiny_heartbeat_are_refused(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = _config(nats_server, prefix, tmp_path)
    async with (
        running_coordinator(config) as coordinator,
        running_worker(config) as worker,
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        running = await client.submit(spec("sleep", {"seconds": 30}))
        await eventually(
            lambda: _state(client, running.task_id, TaskState.RUNNING), what="the sleep task running", timeout_s=20
        )
        nc, subjects = client.conn.nc, client.conn.subjects
        forged = TaskSucceeded(
            event_id=new_id(), task_id=running.task_id, attempt=1, node_id="intruder", at=time.time(),
            result=msgspec.Raw(b'{"forged": true}'), started_at=time.time(),
        )  # fmt: skip
        # Under the intruder's own node id: the attempt is held by the real worker.
        await client.conn.js.publish(subjects.events("intruder", running.task_id), encode(forged))
        # Under the real worker's subject but naming the intruder: the subject and the body disagree.
        await client.conn.js.publish(subjects.events(worker.node_id, running.task_id), encode(forged))
        await eventually(lambda: _quarantined(client, 2), what="both forgeries quarantined", timeout_s=20)
        entries = await client.quarantine_list()
        assert all(e.reason.startswith("refused:") for e in entries), entries
        assert (await client.get_task(running.task_id, history=False)).state == TaskState.RUNNING

        beat = _beat(worker.node_id, interval_s=0.001)
        with capture_logs() as logs:
            await nc.publish(subjects.heartbeat(worker.node_id), encode(beat))
            await nc.publish(subjects.heartbeat("someone-else"), encode(_beat(worker.node_id, interval_s=1.0)))
            await nc.flush()
            refused = await eventually(
                lambda: [e for e in logs if e["event"] == "security.heartbeat_refused"][1:], what="both beats refused"
            )
        assert "below the minimum" in logs[0]["reason"] or "below the minimum" in refused[0]["reason"]
        view = coordinator.registry.get(worker.node_id)
        assert view is not None and view.status.value == "online"
        await client.cancel(running.task_id)


async def _state(client: Any, task_id: str, state: TaskState) -> bool:
    return bool((await client.task_states([task_id])).get(task_id) == state)


async def _quarantined(client: Any, count: int) -> bool:
    return len(await client.quarantine_list()) >= count


def _beat(node_id: str, *, interval_s: float) -> NodeHeartbeat:
    now = time.time()
    return NodeHeartbeat(
        node_id=node_id, hostname="h", pid=1, version="0", status=NodeStatus.ONLINE, skills=["echo"], capacity=1,
        running=0, interval_s=interval_s, started_at=now, sent_at=now,
    )  # fmt: skip
