"""The coordinator's signed, forward-only anchors on a real nats-server and SQLite, in this process:
an upgrade from unsigned anchors in a one-entry bucket, and the anchor not moved back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import nats

from common.config import ClawConfig
from storage.audit_anchor import ANCHOR_KEY, Anchor
from tests.helpers import connected_client, running_coordinator


async def test_an_old_bucket_is_raised_to_64_anchors_and_an_unsigned_legacy_anchor_is_ignored(
    config: ClawConfig,
) -> None:
    bucket = f"{config.nats.prefix}_audit"
    nc = await nats.connect(config.nats.url)
    try:
        js = nc.jetstream()
        old = await js.create_key_value(bucket=bucket, history=1)  # as versions before signing made it
        await old.put(ANCHOR_KEY, msgspec.json.encode(Anchor(event_id=1, hash="0" * 64)))
        async with running_coordinator(config) as coordinator, connected_client(config) as client:
            assert (await js.stream_info(f"KV_{bucket}")).config.max_msgs_per_subject == 64
            await coordinator.auditor.anchor()  # the built-in skills' registrations are events already
            reply = await client.audit_verify()
            assert reply.ok, reply
            assert reply.anchored_event == reply.head_event and reply.anchor_problems == []
            assert reply.anchor_key == coordinator.auditor.public_key
            history = await (await js.key_value(bucket)).history(ANCHOR_KEY)
            assert [msgspec.json.decode(e.value or b"", type=Anchor).signature is not None for e in history] == [
                False,
                True,
            ]
    finally:
        await nc.close()


async def test_the_coordinator_does_not_move_the_anchor_back_below_a_cut(config: ClawConfig, tmp_path: Path) -> None:
    async with running_coordinator(config) as coordinator:
        await coordinator.auditor.anchor()
    nc = await nats.connect(config.nats.url)
    try:
        kv = await nc.jetstream().key_value(f"{config.nats.prefix}_audit")
        anchored = msgspec.json.decode((await kv.get(ANCHOR_KEY)).value or b"", type=Anchor)
        db = sqlite3.connect(tmp_path / "claw.db")
        try:
            db.execute("DROP TRIGGER events_no_delete")
            db.execute("DELETE FROM events WHERE id > ?", (anchored.event_id - 2,))
            db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (anchored.event_id - 2,))
            db.commit()
        finally:
            db.close()
        async with running_coordinator(config) as coordinator, connected_client(config) as client:
            await coordinator.auditor.anchor()
            assert msgspec.json.decode((await kv.get(ANCHOR_KEY)).value or b"", type=Anchor) == anchored
            reply = await client.audit_verify()
        assert (reply.ok, reply.broken_event) == (False, anchored.event_id)
        assert "was cut short" in (reply.problem or "")
    finally:
        await nc.close()
