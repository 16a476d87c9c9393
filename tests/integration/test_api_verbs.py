"""Any API verb can be called by name, with its request built from JSON, through `ClawClient.call`.

This is the path an HTTP gateway takes: it has a verb's name and a JSON body, finds the verb in
`verbs.BY_NAME`, decodes the body into the verb's request Struct, and calls it through the client,
getting the reply Struct the verb declares. Against a real coordinator on a real nats-server.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from common import api, verbs
from common.config import ClawConfig
from common.errors import InvalidInputError, TaskNotFoundError
from common.models import TaskView
from common.states import TaskState
from communication.api_client import ClawClient
from communication.codec import decode_request
from tests.helpers import connected_client, running_coordinator, running_worker, spec, wait_nodes_online


async def call_by_name(client: ClawClient, name: str, body: bytes) -> msgspec.Struct:
    """What a gateway does with `POST /api/<name>` and a JSON body."""
    verb = verbs.BY_NAME[name]
    reply: msgspec.Struct = await client.call(verb, decode_request(verb, body))
    return reply


async def test_every_reading_verb_answers_by_name_with_its_declared_reply_type(config: ClawConfig) -> None:
    reading = [verb for verb in verbs.ALL if verb.role == verbs.Role.VIEWER]
    async with running_coordinator(config) as coordinator, connected_client(config) as client:
        submitted = await client.submit_many([spec("echo", {"n": 1})])
        await coordinator.workflows.register("name: one\nnodes: {a: {skill: echo}}\n")
        run_id = await coordinator.workflows.start_run("one", {})
        bodies = {
            "task_get": {"task_id": submitted[0].task_id},
            "task_states": {"task_ids": [submitted[0].task_id]},
            "artifacts": {"task_id": submitted[0].task_id},
            "workflow_show": {"run_id": run_id},
            "schedule_show": {"name": "s"},
        }
        await client.call(verbs.SCHEDULE_CREATE, api.ScheduleCreateRequest(name="s", on_event=True, skill="echo"))
        for verb in reading:
            reply = await call_by_name(client, verb.name, json.dumps(bodies.get(verb.name, {})).encode())
            assert type(reply) is verb.reply, verb.name


async def test_a_task_submitted_and_read_by_verb_name_is_the_one_the_typed_methods_see(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        body = b'{"tasks": [{"skill": "echo", "input": {"via": "gateway"}}], "submitter": "gw"}'
        submitted = await call_by_name(client, "submit", body)
        assert isinstance(submitted, api.SubmitReply)
        task_id = submitted.results[0].task_id
        assert await client.wait([task_id], timeout_s=20) == {task_id: TaskState.SUCCEEDED}
        view = await call_by_name(client, "task_get", json.dumps({"task_id": task_id}).encode())
        assert isinstance(view, TaskView) and view == await client.get_task(task_id)
        assert msgspec.json.decode(bytes(view.result)) == {"via": "gateway"}
        # A refusal is the same error class and message either way.
        with pytest.raises(InvalidInputError, match="already succeeded") as by_name:
            await call_by_name(client, "task_cancel", json.dumps({"task_id": task_id}).encode())
        with pytest.raises(InvalidInputError) as typed:
            await client.cancel(task_id)
        assert str(by_name.value) == str(typed.value)


async def test_a_call_with_another_verbs_request_is_refused_before_anything_is_sent(config: ClawConfig) -> None:
    async with connected_client(config) as client:  # no coordinator: nothing could answer anyway
        with pytest.raises(TypeError, match="the task_cancel verb takes a TaskCancelRequest, not a TaskRetryRequest"):
            await client.call(verbs.TASK_CANCEL, api.TaskRetryRequest(task_id="x"))  # type: ignore[arg-type]


async def test_a_body_that_is_not_the_verbs_request_is_invalid_input_for_every_verb(config: ClawConfig) -> None:
    async with running_coordinator(config), connected_client(config) as client:
        nc, subjects = client.conn.nc, client.conn.subjects
        for verb in verbs.ALL:
            msg = await nc.request(subjects.api("tester", verb.name), b"[1]", timeout=30)
            reply = msgspec.json.decode(msg.data, type=api.ApiReply)
            if msgspec.structs.fields(verb.request):
                assert reply.error is not None and reply.error.code == InvalidInputError.code, (verb.name, reply)
                assert reply.error.message.startswith(f"invalid request: {verb.request.__name__}"), reply.error
            else:  # it takes nothing, and ignores what it is sent
                assert reply.error is None, (verb.name, reply)


async def test_the_quarantine_filters_by_any_task_id_even_one_longer_than_a_real_id(config: ClawConfig) -> None:
    async with running_coordinator(config), connected_client(config) as client:
        # Quarantined events name tasks by subject token, which may be anything: no `not_found` here.
        assert await client.quarantine_list(task_id="X" * 200) == []
        with pytest.raises(TaskNotFoundError, match="200 characters"):
            await client.get_task("X" * 200)
