"""Node control through the API on a real nats-server: pause, drain and resume a worker; the state is
the coordinator's (persisted), and survives a coordinator restart and a worker restart."""

from __future__ import annotations

import pytest

from common.config import ClawConfig
from common.errors import NodeNotFoundError
from common.states import NodeControl, NodeStatus, TaskState
from communication.api_client import ClawClient
from tests.helpers import (
    connected_client,
    eventually,
    running_coordinator,
    running_worker,
    spec,
    wait_nodes_online,
    worker_config,
)
from worker.service import Worker


async def state_of(client: ClawClient, task_id: str) -> TaskState:
    return (await client.task_states([task_id]))[task_id]


async def node(client: ClawClient, node_id: str) -> tuple[NodeStatus, NodeControl]:
    found = next(n for n in await client.nodes() if n.node_id == node_id)
    return found.status, found.control


async def stays_queued(client: ClawClient, worker: Worker, task_id: str) -> None:
    """The worker looked for work twice (its periodic polls) and still did not take the task."""
    polls = worker.puller.polls
    await eventually(lambda: worker.puller.polls >= polls + 2, what="two polls of the worker")
    assert await state_of(client, task_id) == TaskState.QUEUED


async def test_pause_is_honoured_at_once_and_resume_runs_what_waited(config: ClawConfig) -> None:
    async with (
        running_coordinator(config),
        running_worker(worker_config(config, node_id="w1")) as worker,
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        paused = await client.node_control("w1", NodeControl.PAUSED, by="ops")
        assert (paused.confirmed, paused.changed, paused.status) == (True, True, NodeStatus.PAUSED)
        assert worker.puller.paused  # applied before the answer
        assert await node(client, "w1") == (NodeStatus.PAUSED, NodeControl.PAUSED)

        submitted = await client.submit(spec("echo", {"n": 1}))
        await stays_queued(client, worker, submitted.task_id)

        again = await client.node_control("w1", NodeControl.PAUSED)
        assert (again.changed, again.status) == (False, NodeStatus.PAUSED)
        resumed = await client.node_control("w1", NodeControl.ACTIVE, by="ops")
        assert (resumed.confirmed, resumed.status) == (True, NodeStatus.ONLINE)
        await client.wait([submitted.task_id], timeout_s=30)
        assert await state_of(client, submitted.task_id) == TaskState.SUCCEEDED

        with pytest.raises(NodeNotFoundError, match="no node called 'w9' has registered"):
            await client.node_control("w9", NodeControl.PAUSED)
        assert (await client.audit_verify()).ok  # the controls are events of the hash-chained log


async def test_drain_finishes_running_tasks_pulls_nothing_more_and_shows_drained(config: ClawConfig) -> None:
    async with (
        running_coordinator(config),
        running_worker(worker_config(config, node_id="w1")) as worker,
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        long = await client.submit(spec("sleep", {"seconds": 2}))
        await eventually(lambda: worker.slots.used == 1, what="the sleep task runs")
        drained = await client.node_control("w1", NodeControl.DRAINED, by="ops")
        assert (drained.status, drained.running) == (NodeStatus.DRAINING, 1)
        waiting = await client.submit(spec("echo", {"n": 2}))

        await client.wait([long.task_id], timeout_s=30)
        assert await state_of(client, long.task_id) == TaskState.SUCCEEDED
        await eventually(lambda: _is(client, "w1", NodeStatus.DRAINED), what="w1 reports drained")
        await stays_queued(client, worker, waiting.task_id)

        await client.node_control("w1", NodeControl.ACTIVE)
        await client.wait([waiting.task_id], timeout_s=30)
        assert await state_of(client, waiting.task_id) == TaskState.SUCCEEDED


async def test_a_paused_node_stays_paused_across_coordinator_and_worker_restarts(config: ClawConfig) -> None:
    w1 = worker_config(config, node_id="w1")
    async with running_coordinator(config), running_worker(w1), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        await client.node_control("w1", NodeControl.PAUSED, by="ops")

    # Both restarted: the coordinator reads the state from its database, the worker from KV.
    async with (
        running_coordinator(config),
        running_worker(w1) as worker,
        connected_client(config) as client,
    ):
        assert worker.puller.paused and worker.node_control.control == NodeControl.PAUSED
        await eventually(lambda: _is(client, "w1", NodeStatus.PAUSED), what="w1 back, paused")
        assert (await node(client, "w1"))[1] == NodeControl.PAUSED
        submitted = await client.submit(spec("echo", {}))
        await stays_queued(client, worker, submitted.task_id)
        await client.node_control("w1", NodeControl.ACTIVE)
        await client.wait([submitted.task_id], timeout_s=30)


async def test_a_worker_that_missed_the_command_gets_it_again_from_its_heartbeat(config: ClawConfig) -> None:
    """The worker's control is changed behind the coordinator's back (as if it missed a message):
    its next beat disagrees with the desired state, and the coordinator sends the command again."""
    async with (
        running_coordinator(config),
        running_worker(worker_config(config, node_id="w1")) as worker,
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        await client.node_control("w1", NodeControl.PAUSED)
        worker.node_control.apply(NodeControl.ACTIVE)
        await eventually(lambda: worker.node_control.control == NodeControl.PAUSED, what="paused again")
        assert worker.puller.paused


async def _is(client: ClawClient, node_id: str, status: NodeStatus) -> bool:
    return (await node(client, node_id))[0] == status
