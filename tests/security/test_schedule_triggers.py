"""Probes: an attacker on the bus against schedules and their triggers.

Anyone who may publish on `<prefix>.trigger.>` or call the API tries to make a schedule fire twice,
fire something else, or never fire: take a future fire id as their own task's idempotency key,
publish garbage (not JSON, JSON nested thousands deep, headers naming a fire id), send webhook
events whose id mimics a cron fire id. Each must leave every fire single and the coordinator
running; what is refused says so in one line.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from common import api, verbs
from common.config import ClawConfig
from common.errors import InvalidInputError
from communication.connection import NatsConnection
from coordinator.schedules.timing import IntervalTiming, fire_id
from tests.helpers import connected_client, eventually, running_coordinator, spec


def fires(db: Path, name: str) -> list[tuple[str, str | None, str | None]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT fire_id, target_id, error FROM schedule_fires WHERE schedule = ? ORDER BY fire_id", (name,)
        ).fetchall()
    finally:
        conn.close()
    return [(r[0], r[1], r[2]) for r in rows]


async def test_a_client_cannot_take_a_future_fire_id_as_its_own_idempotency_key(config: ClawConfig) -> None:
    db = Path(config.coordinator.db_path)
    async with running_coordinator(config), connected_client(config) as client:
        view = await client.call(
            verbs.SCHEDULE_CREATE, api.ScheduleCreateRequest(name="nightly", every_s=2.0, skill="echo", missed="all")
        )
        assert view.next_fire_at is not None
        upcoming = IntervalTiming(2.0, int(view.created_at)).next_after(view.next_fire_at)
        stolen = fire_id("nightly", upcoming)
        with pytest.raises(InvalidInputError, match="idempotency keys starting with 'schedule:' are the fire ids"):
            await client.submit(spec("echo", {"mine": True}, idempotency_key=stolen))
        # Naming itself a schedule in the request does not help: who submits comes from the subject
        # the request arrived on (the credentials), never from the request's `submitter` field.
        with pytest.raises(InvalidInputError, match="idempotency keys starting with 'schedule:' are the fire ids"):
            await client.call(
                verbs.SUBMIT,
                api.SubmitRequest(tasks=[spec("echo", idempotency_key=stolen)], submitter="schedule:someone-else"),
            )
        await client.call(verbs.SCHEDULE_PAUSE, api.ScheduleNameRequest(name="nightly"))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM tasks WHERE idempotency_key = ?", (stolen,)).fetchone()[0] == 0


async def test_garbage_on_a_trigger_subject_fires_once_each_and_never_stops_the_coordinator(
    config: ClawConfig,
) -> None:
    db = Path(config.coordinator.db_path)
    async with running_coordinator(config) as coordinator, connected_client(config) as client:
        await client.call(
            verbs.SCHEDULE_CREATE, api.ScheduleCreateRequest(name="inbox", on_subject="inbox.*", skill="echo")
        )
        conn = await NatsConnection.connect(config.nats, name="attacker")
        try:
            subject = conn.subjects.trigger(conn.identity, "inbox.new")
            await conn.js.publish(subject, b"\xff\xfe not json \x00")
            await conn.js.publish(subject, b"[" * 100_000 + b"]" * 100_000)  # nested far too deep
            # A header naming a fire id changes nothing: the id comes from the stream sequence.
            await conn.js.publish(subject, b"{}", headers={"Nats-Msg-Id": "schedule:inbox:2030-01-01T00:00:00Z"})
            await conn.js.publish(subject, b'{"ok": true}')
            await conn.js.publish(conn.subjects.trigger(conn.identity, "inbox.a.b"), b"{}")  # does not match inbox.*
        finally:
            await conn.close()
        await eventually(lambda: len(fires(db, "inbox")) == 4, what="one fire per matching message")
        assert not coordinator._lease.lost.is_set()
        assert (await client.ping()) is not None
    recorded = fires(db, "inbox")
    assert [f[0] for f in recorded] == [f"schedule:inbox:subject-{seq}" for seq in (1, 2, 3, 4)]
    ok = [f for f in recorded if f[2] is None]
    assert len(ok) == 4  # the deep one arrives as text, cut to 16 KiB


async def test_webhook_event_ids_live_in_their_own_namespace_and_fire_once(config: ClawConfig) -> None:
    db = Path(config.coordinator.db_path)
    async with running_coordinator(config), connected_client(config) as client:
        await client.call(verbs.SCHEDULE_CREATE, api.ScheduleCreateRequest(name="hook", on_event=True, skill="echo"))
        mimic = "2030-01-01T00:00:00Z"
        data = msgspec.Raw(b'{"x": 1}')
        event = api.ScheduleEventRequest(name="hook", event_id=mimic, data=data)
        first = await client.call(verbs.SCHEDULE_EVENT, event)
        again = await client.call(verbs.SCHEDULE_EVENT, event)
        assert first.fire.fire_id == f"schedule:hook:event-{mimic}" != fire_id("hook", 1893456000.0)
        assert again.fire.duplicate and again.fire.target_id == first.fire.target_id
        deep = api.ScheduleEventRequest(name="hook", event_id="deep", data=msgspec.Raw(b"[" * 100_000 + b"]" * 100_000))
        with pytest.raises(InvalidInputError, match="nest"):
            await client.call(verbs.SCHEDULE_EVENT, deep)
        with pytest.raises(InvalidInputError):
            await client.schedule_event("hook", "x" * 500, {"too": "long an id"})
    assert len(fires(db, "hook")) == 1
