"""Subject triggers fire under the publisher's identity, not the schedule owner's.

A trigger message goes on `<prefix>.trigger.<identity>.<subject>`, and the server lets each
identity publish only under its own name, so the coordinator knows who fired. A schedule fires for
its creator and for the identities and roles its `--allow-trigger` names; anyone else who may submit
(and so publish triggers) fires nothing, typing another's name in the subject is refused by the
server, and every fire records who caused it (the task's input and the hash-chained event log).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import msgspec
import pytest

from common import api, verbs
from common.errors import InvalidInputError
from tests.helpers import eventually
from tests.security.bus import PREFIX, SecuredCluster, secured_cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SecuredCluster]:
    async with secured_cluster(tmp_path) as running:
        yield running


def fired_by(db: Path) -> list[str | None]:
    """Who caused each `schedule.fired` row of the event log, in order."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT data FROM events WHERE kind = 'schedule.fired' ORDER BY id").fetchall()
    finally:
        conn.close()
    return [json.loads(r[0]).get("by") for r in rows]


async def test_a_trigger_fires_only_for_identities_the_schedule_allows_and_records_who(
    cluster: SecuredCluster,
) -> None:
    async with cluster.client("oscar") as oscar:
        with pytest.raises(InvalidInputError, match="--allow-trigger role:boss: no such role"):
            await oscar.call(verbs.SCHEDULE_CREATE, api.ScheduleCreateRequest(
                name="bad", on_subject="inbox.*", skill="echo", trigger_allow=["role:boss"]))  # fmt: skip
        view = await oscar.call(
            verbs.SCHEDULE_CREATE,
            api.ScheduleCreateRequest(name="inbox", on_subject="inbox.*", skill="echo",
                                      trigger_allow=["carol", "role:admin"]),
        )  # fmt: skip
        assert view.created_by == "oscar" and view.trigger_allow == ["carol", "role:admin"]

        seqs: dict[str, int] = {}
        for name in ("bob", "oscar", "carol", "adam", "cli"):
            async with cluster.connect(name) as nc:
                ack = await nc.jetstream().publish(
                    f"{PREFIX}.trigger.{name}.inbox.new", b'{"from": "%s"}' % name.encode()
                )
                seqs[name] = ack.seq
        # Typing another identity into the subject: the server refuses it.
        async with cluster.connect("bob") as nc:
            await nc.publish(f"{PREFIX}.trigger.oscar.inbox.new", b"{}")
            await nc.flush()
            await eventually(
                lambda: cluster.violations("Publish", f'"{PREFIX}.trigger.oscar.inbox.new"'), what="bob posing as oscar"
            )
        # A viewer may not raise triggers at all.
        async with cluster.connect("vic") as nc:
            await nc.publish(f"{PREFIX}.trigger.vic.inbox.new", b"{}")
            await nc.flush()
            await eventually(lambda: cluster.violations("Publish", f'"{PREFIX}.trigger.vic.inbox.new"'), what="vic")

        async def fires() -> list[api.ScheduleFireView]:
            shown = await oscar.call(verbs.SCHEDULE_SHOW, api.ScheduleNameRequest(name="inbox"))
            return shown.fires if len(shown.fires) >= 3 else []

        await eventually(fires, what="the allowed fires", timeout_s=30)
        async with cluster.connect("coordinator") as nc:
            js = nc.jetstream()

            async def handled() -> bool:
                # The coordinator acks a trigger message once handled: all five are, refused or fired.
                info = await js.consumer_info(cluster.subjects.triggers_stream, cluster.subjects.triggers_consumer)
                return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= max(seqs.values())

            await eventually(handled, what="every trigger message handled")
        shown = await oscar.call(verbs.SCHEDULE_SHOW, api.ScheduleNameRequest(name="inbox"))
        fired = sorted(f.fire_id for f in shown.fires)
        assert sorted(f.by or "" for f in shown.fires) == ["adam", "carol", "oscar"]
        assert fired == sorted(f"schedule:inbox:subject-{seqs[n]}" for n in ("oscar", "carol", "adam"))
        inputs = {}
        for fire in shown.fires:
            assert fire.target_id is not None
            task = await oscar.get_task(fire.target_id, history=False)
            inputs[fire.fire_id] = msgspec.json.decode(bytes(task.input))["trigger"]
        assert sorted(t["by"] for t in inputs.values()) == ["adam", "carol", "oscar"]
    assert sorted(b for b in fired_by(cluster.tmp_path / "claw.db") if b) == ["adam", "carol", "oscar"]


async def test_an_identity_bound_to_a_tenant_fires_no_schedule_of_another_tenant(cluster: SecuredCluster) -> None:
    """Credentials bound to a tenant (`claw creds create --tenant acme`) submit only for acme; a
    schedule of another tenant that lets any submitter fire it must not start work for that tenant on
    their trigger message (the submit path would have refused the tenant; the fire must too)."""
    import asyncio

    from structlog.testing import capture_logs

    from cli.credentials import issue

    await asyncio.to_thread(issue, cluster.auth_dir, name="tina", roles=["submitter"], prefix=PREFIX,
                            out=cluster.auth_dir / "tina.creds", tenant="acme")  # fmt: skip
    async with cluster.client("oscar") as oscar:
        for name, tenant in (("public", None), ("acme-inbox", "acme")):
            request = api.ScheduleCreateRequest(
                name=name, on_subject="inbox.*", skill="echo", tenant=tenant, trigger_allow=["role:submitter"]
            )
            await oscar.call(verbs.SCHEDULE_CREATE, request)

        async def fired(name: str) -> set[str]:
            shown = await oscar.call(verbs.SCHEDULE_SHOW, api.ScheduleNameRequest(name=name))
            return {f.fire_id for f in shown.fires}

        seqs: dict[str, int] = {}
        with capture_logs() as logs:
            for name in ("tina", "bob"):  # in this order: once bob's fired both, tina's was judged
                async with cluster.connect(name) as nc:
                    ack = await nc.jetstream().publish(f"{PREFIX}.trigger.{name}.inbox.new", b"{}")
                    seqs[name] = ack.seq
            for name in ("public", "acme-inbox"):
                await eventually(lambda n=name: _has(fired(n), f"schedule:{n}:subject-{seqs['bob']}"), what=name)
        assert await fired("public") == {f"schedule:public:subject-{seqs['bob']}"}
        assert await fired("acme-inbox") == {f"schedule:acme-inbox:subject-{s}" for s in seqs.values()}
        refused = [e for e in logs if e["event"] == "security.trigger_refused"]
        assert [(e["identity"], e["schedule"], e["tenant"]) for e in refused] == [("tina", "public", "acme")]


async def _has(pending: Awaitable[set[str]], item: str) -> bool:
    return item in await pending
