"""The coordinator's book of delivery claims: kept raw for a while, decoded only when taken."""

from __future__ import annotations

from nats.aio.msg import Msg

from common.clock import ManualClock
from common.models import DeliveryClaim, DeliveryClaims
from communication.codec import encode
from coordinator.delivery_claims import ClaimBook


def claims_msg(node_id: str, *task_ids: str) -> Msg:
    data = encode(DeliveryClaims(node_id=node_id, claims=[DeliveryClaim(t, 1, f"$JS.ACK.{t}") for t in task_ids]))
    return Msg(_client=None, subject=f"claw.nodes.claims.{node_id}", data=data)  # type: ignore[arg-type]


async def test_claims_are_kept_per_node_for_keep_s_and_forgotten_once_taken() -> None:
    clock = ManualClock()
    book = ClaimBook(clock, keep_s=10.0)
    await book.on_message(claims_msg("w1", "old"))
    clock.advance(8.0)
    await book.on_message(claims_msg("w1", "a", "b"))
    await book.on_message(claims_msg("w2", "c"))
    clock.advance(4.0)  # "old" is 12 s old now
    assert [(c.task_id, c.ack_subject) for c in book.take("w1")] == [("a", "$JS.ACK.a"), ("b", "$JS.ACK.b")]
    assert book.take("w1") == []
    assert [c.task_id for c in book.take("w2")] == ["c"]


async def test_a_message_that_is_not_claims_is_skipped() -> None:
    book = ClaimBook(ManualClock(), keep_s=10.0)
    await book.on_message(Msg(_client=None, subject="claw.nodes.claims.w1", data=b"not msgpack"))  # type: ignore[arg-type]
    await book.on_message(claims_msg("w1", "a"))
    assert [c.task_id for c in book.take("w1")] == ["a"]
