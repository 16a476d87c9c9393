"""Held tasks have a limit of their own, and every list reply is paged so none exceeds max_payload.

A list request names a page size (`limit`) and where to go on from (`cursor`); its reply carries the
page, `next_cursor` when more exist and `total` on the first page. The coordinator also stops a
page early when the next item would take the reply over the server's max_payload.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.api import ApiReply
from common.errors import PermanentError, QueueFullError
from common.states import TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from tests.conftest import make_config
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online
from worker.context import TaskContext
from worker.skills import Skill, builtin_registry

SMALL_MAX_PAYLOAD = 32 * 1024


class SmallPayloadNats(EmbeddedNatsServer):
    """A nats-server whose max_payload is 32 KiB, so that a few hundred items overflow a reply."""

    def command(self) -> list[str]:
        conf = self.options.store_dir / "small.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(f"max_payload: {SMALL_MAX_PAYLOAD}\n")
        return [*super().command(), "-c", str(conf)]


@pytest.fixture
def small_nats(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    server = SmallPayloadNats(NatsServerOptions(store_dir=tmp_path / "nats", port=0, http_port=0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def held(n: int, pad: int = 150) -> Any:
    return spec("http.request", {"url": f"https://example.com/{n}", "method": "POST", "body": "p" * pad})


async def test_held_tasks_count_against_their_own_limit(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = make_config(nats_server, prefix, tmp_path, coordinator={"max_waiting_approval": 20})
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        first = await client.submit_many([held(n) for n in range(18)])
        assert {r.state for r in first} == {TaskState.WAITING_APPROVAL}
        with pytest.raises(QueueFullError, match=r"18 tasks wait for approval.*coordinator\.max_waiting_approval"):
            await client.submit_many([held(n) for n in range(3)])  # all or nothing
        await client.submit_many([held(n) for n in range(2)])
        with pytest.raises(QueueFullError, match="max_waiting_approval"):
            await client.submit(held(99))
        # Tasks that run at once are not held: the limit does not touch them.
        done = await client.submit(spec("echo"))
        assert await client.wait([done.task_id], timeout_s=20) == {done.task_id: TaskState.SUCCEEDED}
        # A decision makes room.
        await client.reject(first[0].task_id, reason="no")
        assert (await client.submit(held(100))).state == TaskState.WAITING_APPROVAL
        assert len(await client.approvals()) == 20


async def test_thousands_of_held_tasks_page_through_approvals_and_the_task_list(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    count = 3000
    config = make_config(nats_server, prefix, tmp_path, coordinator={"max_waiting_approval": count})
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        submitted = await client.submit_many([held(n) for n in range(count)])
        ids = {r.task_id for r in submitted}
        with pytest.raises(QueueFullError, match="max_waiting_approval"):
            await client.submit(held(count))

        # All of them at once would be ~1.4 MiB: the reply is a page, and says there is more.
        raw = await client.conn.nc.request(
            client.conn.subjects.api(client.conn.identity, "approvals"), b"{}", timeout=30
        )
        assert len(raw.data) <= client.conn.nc.max_payload
        page = await client.approvals_page(limit=10_000)
        assert page.total == count and page.next_cursor is not None and 0 < len(page.items) < count

        listed = await client.approvals()
        assert [v.task_id for v in listed] == sorted(ids)  # oldest first, each once
        iterated = [v.task_id async for v in client.iter_approvals(page_size=700)]
        assert iterated == sorted(ids)
        first_100 = await client.approvals(limit=100)
        assert [v.task_id for v in first_100] == sorted(ids)[:100]

        tasks = await client.list_tasks(state=TaskState.WAITING_APPROVAL, limit=10_000)
        assert [t.task_id for t in tasks] == sorted(ids, reverse=True)  # newest first, each once
        some = await client.tasks_page(limit=250)
        assert len(some.items) == 250 and some.total == count and some.next_cursor == some.items[-1].task_id


async def test_every_list_reply_fits_a_small_max_payload(small_nats: EmbeddedNatsServer, tmp_path: Path) -> None:
    config = make_config(small_nats, "paged", tmp_path, coordinator={"max_waiting_approval": 1000})

    async def many_files(ctx: TaskContext, input: dict[str, Any]) -> str:
        for n in range(150):
            await ctx.put_artifact(f"out/file-{n:03d}.txt", f"file {n}".encode())
        return "done"

    async def hopeless(ctx: TaskContext, input: dict[str, Any]) -> None:
        raise PermanentError("no " * 40)

    skills = builtin_registry()
    skills.register(Skill("many.files", many_files))
    skills.register(Skill("hopeless", hopeless))
    second = msgspec.structs.replace(config, worker=msgspec.structs.replace(config.worker, node_id="second"))
    async with (
        running_coordinator(config),
        running_worker(config, skills=skills),
        running_worker(second),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 2)
        assert client.conn.nc.max_payload == SMALL_MAX_PAYLOAD
        held_ids = {r.task_id for r in await client.submit_many([held(n) for n in range(150)])}
        files = await client.submit(spec("many.files"))
        dead = [r.task_id for r in await client.submit_many([spec("hopeless", {"n": n}) for n in range(60)])]
        await client.wait([files.task_id, *dead], timeout_s=60)
        await eventually(lambda: _letters(client, 60), timeout_s=30, what="60 dead letters")

        for verb in ("approvals", "task_list", "dlq_list", "skills", "nodes"):
            raw = await client.conn.nc.request(
                client.conn.subjects.api(client.conn.identity, verb), b'{"limit": 10000}', timeout=30
            )
            assert len(raw.data) <= SMALL_MAX_PAYLOAD
            assert msgspec.json.decode(raw.data, type=ApiReply).error is None, verb

        assert {v.task_id for v in await client.approvals()} == held_ids
        assert len(await client.list_tasks(limit=10_000)) == 150 + 1 + 60
        letters = await client.dlq_list(limit=1000)
        assert sorted(v.letter.task_id or "" for v in letters) == sorted(dead)
        dlq_page = await client.dlq_page(limit=1000)
        assert dlq_page.next_cursor is not None and dlq_page.total == 60
        artifacts = await client.artifacts(files.task_id)
        assert sorted(a.name for a in artifacts) == [f"out/file-{n:03d}.txt" for n in range(150)]
        assert (await client.artifacts_page(files.task_id, limit=10)).next_cursor is not None
        skills_listed = await client.skills()
        assert {"echo", "hopeless", "many.files"} <= {s.entry.name for s in skills_listed}
        assert (await client.skills_page(limit=2)).next_cursor is not None
        nodes_page = await client.nodes_page(limit=1)
        assert len(nodes_page.items) == 1 and nodes_page.total == 2 and nodes_page.next_cursor is not None
        assert len({n.node_id for n in await client.nodes()}) == 2
        # Replaying every dead letter goes through them page by page.
        replays = await client.dlq_replay(all=True)
        assert sorted(r.task_id for r in replays) == sorted(dead)


async def _letters(client: ClawClient, count: int) -> bool:
    return len(await client.dlq_list(limit=1000)) == count
