"""The delivery count read from a JetStream reply subject matches nats-py's own parsing."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from communication.ack_reply import num_delivered

V1 = "$JS.ACK.CLAW_TASKS.claw-echo-normal.3.1042.998.1732147200000000000.17"
V2 = "$JS.ACK._.ACCHASH.CLAW_TASKS.claw-echo-normal.5.1042.998.1732147200000000000.17.tok"


@pytest.mark.parametrize(("reply", "expected"), [(V1, 3), (V2, 5)])
def test_both_reply_layouts_give_nats_pys_delivery_count(reply: str, expected: int) -> None:
    msg = Msg(_client=None, subject="claw.tasks.normal.echo", reply=reply)  # type: ignore[arg-type]
    assert num_delivered(msg) == expected == msg.metadata.num_delivered


def test_a_message_that_is_not_a_jetstream_delivery_is_refused_as_nats_py_refuses_it() -> None:
    msg = Msg(_client=None, subject="x", reply="_INBOX.abc")  # type: ignore[arg-type]
    with pytest.raises((NotJSMessageError, ValueError, IndexError)):
        num_delivered(msg)


def test_a_reply_that_only_looks_like_an_ack_subject_is_left_to_nats_py() -> None:
    msg = Msg(_client=None, subject="x", reply="$JS.API.CLAW_TASKS.c.3.1042.998.1732147200000000000.17")  # type: ignore[arg-type]
    with pytest.raises((NotJSMessageError, ValueError, IndexError)):
        num_delivered(msg)
