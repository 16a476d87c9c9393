"""A worker bound to a skill set (`claw creds create --role worker --skills echo`) pulls only those
skills' tasks: the server refuses its pulls of any other skill's consumer (so credentials stolen
from a worker of harmless skills cannot take a destructive skill's tasks), and the worker itself
loads only the skills its credentials name. w3 is bound to `echo` (tests/security/bus.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js import api as js_api

from common.errors import ConfigError
from common.states import Priority
from communication.connection import NatsConnection
from communication.pull import PullConsumer
from tests.helpers import eventually, running_worker
from tests.security.bus import SecuredCluster, probe_registry, secured_cluster

HIDDEN = "hidden.job"  # a skill no worker runs, so its task waits on its consumer for the attacker


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SecuredCluster]:
    async with secured_cluster(tmp_path) as running:
        yield running


async def test_a_worker_bound_to_a_skill_cannot_pull_another_skills_tasks(cluster: SecuredCluster) -> None:
    subjects = cluster.subjects
    consumer = subjects.task_consumer(HIDDEN, Priority.NORMAL)
    coordinator = await NatsConnection.connect(cluster.config("coordinator").nats, name="test-coordinator")
    attacker = await NatsConnection.connect(cluster.config("w3").nats, name="attacker")
    try:
        await coordinator.js.add_consumer(
            subjects.tasks_stream,
            js_api.ConsumerConfig(durable_name=consumer, filter_subject=subjects.task(Priority.NORMAL, HIDDEN),
                                  ack_policy=js_api.AckPolicy.EXPLICIT),
        )  # fmt: skip
        await coordinator.js.publish(subjects.task(Priority.NORMAL, HIDDEN), b"secret input")

        # w3's credentials pull the hidden skill's consumer: the server refuses, nothing is delivered.
        stolen = PullConsumer(attacker, subjects.tasks_stream, consumer)
        await stolen.start()
        assert await stolen.fetch_nowait(1, timeout_s=2.0) == []
        await stolen.stop()
        await eventually(
            lambda: cluster.violations("Publish", f'"$JS.API.CONSUMER.MSG.NEXT.{subjects.tasks_stream}.{consumer}"'),
            what="the server refusing w3's pull",
        )
        # Its own skill's consumer answers it.
        info = await attacker.js.consumer_info(subjects.tasks_stream, subjects.task_consumer("echo", Priority.NORMAL))
        assert info.name == subjects.task_consumer("echo", Priority.NORMAL)

        # The task is still there, whole, for a worker that may run it.
        rightful = PullConsumer(coordinator, subjects.tasks_stream, consumer)
        await rightful.start()
        got = await rightful.fetch_nowait(1)
        await rightful.stop()
        assert [m.data for m in got] == [b"secret input"]
    finally:
        await attacker.close()
        await coordinator.close()


async def test_a_bound_worker_loads_only_its_credentials_skills(cluster: SecuredCluster) -> None:
    config = cluster.config("w3", worker={"node_id": "w3", "heartbeat_interval_s": 0.2})
    async with running_worker(config, skills=probe_registry([])) as worker:
        assert worker.skills.names() == ["echo"]
        assert worker.puller.skills == ["echo"]
    assert not cluster.violations("Publish", "tasks-probe-")  # it never tried another skill's consumer

    # Asking it for a skill its credentials do not name is one clear line, before anything is pulled.
    wider = cluster.config("w3", worker={"node_id": "w3", "skills": ["echo", "probe.destroy"]})
    with pytest.raises(ConfigError, match=r"credentials allow only the skill\(s\) echo, not probe.destroy"):
        async with running_worker(wider, skills=probe_registry([])):
            pass


# How w3 asks to redefine its own consumer `tasks-echo-low` with the hidden skill's filter.
REDEFINE = ["durable_create", "create_without_filter", "create_naming_its_filter", "filters_in_body"]


@pytest.mark.parametrize("via", REDEFINE)
async def test_a_bound_worker_cannot_point_its_own_consumer_at_another_skill(cluster: SecuredCluster, via: str) -> None:
    """w3 may create and pull `tasks-echo-<priority>`. It asks the server to redefine that consumer (its
    own name, so name-based permissions alone would let it) with another skill's filter subject, to
    pull that skill's tasks through it. Refused: the only create a bound worker may send names the
    consumer's own filter subject in the API subject, and the server checks the config against it."""
    import json

    subjects, stream = cluster.subjects, cluster.subjects.tasks_stream
    own = subjects.task_consumer("echo", Priority.LOW)
    own_filter, stolen_filter = subjects.task(Priority.LOW, "echo"), subjects.task(Priority.LOW, HIDDEN)
    coordinator = await NatsConnection.connect(cluster.config("coordinator").nats, name="test-coordinator")
    attacker = await NatsConnection.connect(cluster.config("w3").nats, name="attacker")
    try:
        await coordinator.js.publish(stolen_filter, b"secret input")
        config: dict[str, object] = {"durable_name": own, "name": own, "filter_subject": stolen_filter,
                                     "ack_policy": "explicit", "deliver_policy": "all", "max_deliver": -1}  # fmt: skip
        if via == "filters_in_body":
            del config["filter_subject"]
            config["filter_subjects"] = [own_filter, stolen_filter]
        api_subject = {
            "durable_create": f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{own}",
            "create_without_filter": f"$JS.API.CONSUMER.CREATE.{stream}.{own}",
            "create_naming_its_filter": f"$JS.API.CONSUMER.CREATE.{stream}.{own}.{own_filter}",
            "filters_in_body": f"$JS.API.CONSUMER.CREATE.{stream}.{own}.{own_filter}",
        }[via]
        body = json.dumps({"stream_name": stream, "config": config}).encode()
        if via in ("durable_create", "create_without_filter"):
            # Not in its permissions: the server refuses the publish (logged), so no answer comes.
            with pytest.raises(Exception):  # noqa: B017, PT011 - nats-py: a timeout or a permissions error
                await attacker.nc.request(api_subject, body, timeout=2)
            await eventually(lambda: cluster.violations("Publish", f'"{api_subject}"'), what="the refusal logged")
        else:
            # Allowed to ask, refused by JetStream: the config does not match the filter it named.
            answer = json.loads((await attacker.nc.request(api_subject, body, timeout=5)).data)
            assert "error" in answer, answer
        # The consumer still takes echo's tasks only, and nothing of the hidden skill reaches w3.
        info = await coordinator.js.consumer_info(stream, own)
        assert info.config.filter_subject == own_filter and not info.config.filter_subjects
        pull = PullConsumer(attacker, stream, own)
        await pull.start()
        got = await pull.fetch_nowait(1, timeout_s=1.0)
        await pull.stop()
        assert [m.data for m in got] == []
    finally:
        await attacker.close()
        await coordinator.close()
