"""The size of a NATS message as the server counts it, against the max_payload it announced.

nats-server refuses a message whose headers and payload together exceed `max_payload` (1 MiB by
default, from the connection's INFO), and it does so by disconnecting the publisher. nats-py checks
only the payload's length before sending. So whoever builds a message that may be large (a task with
its input, a dead letter, an API reply) measures it here, headers included, and decides before
sending: put a part elsewhere, trim it, or refuse with a clear error.
"""

from __future__ import annotations

from collections.abc import Mapping

# "NATS/1.0\r\n" ... "\r\n": the header block's fixed part.
HEADER_BLOCK_OVERHEAD = len(b"NATS/1.0\r\n\r\n")
# What an API reply may add around its body, and the request headers nats-py echoes on a reply
# (`Msg.respond` sends them back): a margin, so that a page measured against the budget fits.
REPLY_MARGIN_BYTES = 4096


def header_bytes(headers: Mapping[str, str] | None) -> int:
    """How many bytes `headers` add to a message on the wire (0 for none)."""
    if not headers:
        return 0
    # Once per published task and event: an ASCII string's length is its byte count (no encoding).
    size = HEADER_BLOCK_OVERHEAD
    for k, v in headers.items():
        size += (len(k) if k.isascii() else len(k.encode())) + (len(v) if v.isascii() else len(v.encode())) + 4
    return size


def message_bytes(payload: bytes | int, headers: Mapping[str, str] | None = None) -> int:
    """The size the server compares with max_payload: payload plus header block."""
    size = payload if isinstance(payload, int) else len(payload)
    return size + header_bytes(headers) if headers else size


def fits(max_payload: int, payload: bytes | int, headers: Mapping[str, str] | None = None) -> bool:
    """Whether the message may be published to a server announcing `max_payload`."""
    return message_bytes(payload, headers) <= max_payload


def reply_budget(max_payload: int) -> int:
    """The bytes an API reply's body may take so that the whole reply fits."""
    return max(max_payload - REPLY_MARGIN_BYTES, max_payload // 2)


def too_large_message(what: str, size: int, max_payload: int) -> str:
    """One line for a message that cannot be sent: its size and the server's limit."""
    return f"{what} is {size} bytes, the server allows {max_payload} (its max_payload)"
