"""Messages near NATS's max_payload: inputs, task messages, requests and replies.

The server's limit counts a message's headers with its payload, and a publisher that goes over it
is disconnected. So every size check here is of the encoded message (envelope + headers) against
the max_payload the server announced, and nothing the cluster sends or answers may exceed it.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
from nats.aio.msg import Msg

from common.api import ApiReply, SubmitReply, SubmitRequest
from common.config import ClawConfig
from common.errors import PayloadTooLargeError
from common.ids import new_id
from common.models import TaskSpec
from common.states import Priority, TaskState
from communication.api_client import ClawClient
from communication.codec import decode, encode
from communication.nats_server import EmbeddedNatsServer
from communication.payload_limits import header_bytes, message_bytes
from communication.publisher import JetStreamPublisher, MessageTooLargeError, Outgoing
from storage.database import Database
from storage.records import EventRecord, TaskRecord, WriteBatch
from storage.task_writer import TaskWriter
from tests.conftest import make_config
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online


def blob_input(size: int) -> bytes:
    """A JSON object input of exactly `size` bytes."""
    return b'{"blob":"' + b"x" * (size - 11) + b'"}'


async def test_an_input_that_fits_the_request_but_not_the_task_message_goes_to_the_artifact_store(
    config: ClawConfig,
) -> None:
    async with (
        running_coordinator(config) as coordinator,
        running_worker(config),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        max_payload = client.conn.nc.max_payload
        # A raw client's request that just fits (no headers): the task message would not.
        request = SubmitRequest(tasks=[TaskSpec(skill="echo", input=msgspec.Raw(b"{}"))])
        room = max_payload - len(encode(request)) - 50
        request = SubmitRequest(tasks=[TaskSpec(skill="echo", input=msgspec.Raw(blob_input(room)))])
        assert len(encode(request)) <= max_payload
        msg = await client.conn.nc.request(
            client.conn.subjects.api(client.conn.identity, "submit"), encode(request), timeout=30
        )
        reply = decode(msg.data, ApiReply)
        assert reply.error is None, reply.error
        [result] = decode(reply.data, SubmitReply).results
        assert await client.wait([result.task_id], timeout_s=30) == {result.task_id: TaskState.SUCCEEDED}
        task = await client.get_task(result.task_id)
        assert b'"$artifact"' in bytes(task.input) and b'"$artifact"' in bytes(task.result)
        assert [a.name for a in task.artifacts][:1] == ["input.json"]
        assert coordinator.conn.reconnects == 0  # never disconnected for an oversize message


async def test_a_task_that_can_never_be_published_ends_failed_and_task_show_still_answers(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = make_config(nats_server, prefix, tmp_path, coordinator={"republish_after_s": 0.5})
    # A task persisted pending whose message can never fit (written before sizes were checked),
    # with a long timeline: neither its message nor a whole view of it fits one NATS message.
    task_id = new_id()
    now = time.time() - 60
    record = TaskRecord(
        task_id=task_id,
        skill="echo",
        priority=Priority.NORMAL,
        state=TaskState.PENDING,
        input=blob_input(1_048_400).decode(),
        max_attempts=3,
        timeout_s=60.0,
        created_at=now,
        updated_at=now,
    )
    events = [
        EventRecord(
            task_id=task_id, kind="log", at=now + i / 1000, data=msgspec.json.encode({"line": "y" * 200}).decode()
        )
        for i in range(6000)
    ]
    db = await Database.open(config.coordinator.db_path)
    try:
        await TaskWriter(db).write_batch(WriteBatch(new_tasks=[record], events=events))
    finally:
        await db.close()

    async with running_coordinator(config) as coordinator, connected_client(config) as client:
        states = await eventually(
            lambda: _final_state(client, task_id), timeout_s=20, what="the unpublishable task to end"
        )
        assert states == TaskState.FAILED
        task = await client.get_task(task_id)
        assert task.error_type == "PayloadTooLarge"
        assert "max_payload" in (task.error_message or "") and "bytes" in (task.error_message or "")
        assert b'"$omitted"' in bytes(task.input)
        # The newest events are kept (the end of the story); how many were left out is said.
        assert task.events_omitted > 0 and task.events[-1].to_state == TaskState.FAILED
        assert len(encode(task)) < client.conn.nc.max_payload
        assert coordinator.conn.reconnects == 0


async def test_a_request_over_max_payload_gets_a_clear_error(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        huge = msgspec.Raw(blob_input(2_000_000))
        with pytest.raises(PayloadTooLargeError, match=r"request is \d+ bytes, the server allows 1048576"):
            await client.guard_check("echo", huge)
        # submit_many splits what it can and names what it cannot.
        with pytest.raises(PayloadTooLargeError, match="--input-file"):
            await client.submit(TaskSpec(skill="echo", input=huge))
        many = [spec("echo", {"blob": "z" * 200_000, "n": n}) for n in range(12)]
        results = await client.submit_many(many)
        assert len({r.task_id for r in results}) == 12


async def test_a_raw_submit_whose_reply_would_be_too_big_still_gets_its_answer(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = make_config(nats_server, prefix, tmp_path, coordinator={"max_waiting_approval": 10_000})
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        # 9,000 held tasks in one raw request: with a note each, the reply would be ~2 MiB.
        request = SubmitRequest(
            tasks=[TaskSpec(skill="http.request", input=msgspec.Raw(b'{"url":"https://example.com"}'))] * 9000
        )
        msg = await client.conn.nc.request(
            client.conn.subjects.api(client.conn.identity, "submit"), encode(request), timeout=60
        )
        reply = decode(msg.data, ApiReply)
        assert reply.error is None, reply.error
        results = decode(reply.data, SubmitReply).results
        assert len(results) == 9000 and {r.state for r in results} == {TaskState.WAITING_APPROVAL}


async def _final_state(client: ClawClient, task_id: str) -> TaskState | None:
    state = (await client.task_states([task_id])).get(task_id)
    return state if state not in (None, TaskState.PENDING) else None


async def test_the_size_formula_is_the_servers_to_the_byte(config: ClawConfig) -> None:
    """`message_bytes` counts what nats-server counts: at the limit a message passes, one byte over
    the server disconnects a raw publisher, and `JetStreamPublisher` refuses it without sending."""
    import nats

    headers = {"Nats-Msg-Id": "size-check", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    async with connected_client(config) as client:
        nc = client.conn.nc
        max_payload = nc.max_payload
        at_limit = b"a" * (max_payload - header_bytes(headers))
        assert message_bytes(at_limit, headers) == max_payload
        received: list[int] = []

        async def on_message(msg: Msg) -> None:
            received.append(len(msg.data))

        sub = await nc.subscribe(f"{config.nats.prefix}.sizecheck", cb=on_message)
        await nc.publish(f"{config.nats.prefix}.sizecheck", at_limit, headers=headers)
        await eventually(lambda: received == [len(at_limit)], what="the message at the limit")
        await sub.unsubscribe()
        assert client.conn.reconnects == 0

        publisher = JetStreamPublisher(client.conn)
        over = Outgoing(
            f"{config.nats.prefix}.tasks.x", at_limit + b"a", "size-check", {"traceparent": headers["traceparent"]}
        )
        [result] = await publisher.publish_many([over])
        assert isinstance(result, MessageTooLargeError) and result.permanent
        assert client.conn.reconnects == 0 and nc.is_connected

    disconnected: list[bool] = []

    async def on_disconnect() -> None:
        disconnected.append(True)

    raw = await nats.connect(config.nats.url, disconnected_cb=on_disconnect, allow_reconnect=False)
    try:
        await raw.publish(f"{config.nats.prefix}.sizecheck", at_limit + b"a", headers=headers)
        await eventually(lambda: disconnected, timeout_s=10, what="the server to drop an oversize publisher")
    finally:
        await raw.close()
