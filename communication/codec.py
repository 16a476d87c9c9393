"""msgspec codecs for wire messages, built once per type and reused (msgspec perf tips).

`decode` also refuses a message whose schema version `v` is newer than this code understands: new
optional fields are skipped silently, but a bumped `v` means old readers must not guess.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import msgspec

from common.errors import ClawError
from common.events import TaskEvent
from common.models import SCHEMA_VERSION

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class DecodeError(ClawError):
    """A message could not be decoded into the expected type."""

    code = "decode"


def encode(obj: Any) -> bytes:
    """JSON-encode a Struct (or any msgspec-supported value)."""
    return _encoder.encode(obj)


@functools.cache
def decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    """The shared decoder for `type_`."""
    return msgspec.json.Decoder(type_)


def decode(data: bytes, type_: type[T]) -> T:
    """Decode `data` as `type_`, raising `DecodeError` with the reason if it does not fit."""
    value: T = _decode(data, type_)
    return value


def decode_event(data: bytes) -> TaskEvent:
    """Decode a task event (any variant of the `TaskEvent` union)."""
    event: TaskEvent = _decode(data, TaskEvent)
    return event


def _decode(data: bytes, type_: Any) -> Any:
    try:
        value = decoder(type_).decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"cannot decode {_name(type_)}: {exc}") from None
    version = getattr(value, "v", SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise DecodeError(
            f"{_name(type_)} has schema version {version}; this version understands up to "
            f"{SCHEMA_VERSION}: upgrade this process"
        )
    return value


def is_json_object(raw: bytes | msgspec.Raw) -> bool:
    """Whether already-valid JSON text is an object (its first non-blank byte is `{`)."""
    text = bytes(raw).lstrip(b" \t\r\n")
    return text[:1] == b"{"


def _name(type_: Any) -> str:
    return getattr(type_, "__name__", None) or str(type_)
