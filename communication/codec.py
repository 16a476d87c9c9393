"""msgspec codecs for wire messages, built once per type and reused (msgspec perf tips).

`decode` also refuses a message whose schema version `v` is newer than this code understands: new
optional fields are skipped silently, but a bumped `v` means old readers must not guess. JSON nested
too deeply for the decoder (msgspec raises `RecursionError` at about 1,000 levels) is a `DecodeError`
like any other malformed message; `nesting_exceeds` checks a limit before anything is decoded.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from common.errors import ClawError, InvalidInputError
from common.events import TaskEvent
from common.models import SCHEMA_VERSION

if TYPE_CHECKING:
    from common.verbs import RequestT, Verb

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
# What `nesting_exceeds` keeps of a text: quotes and brackets, with braces counted as brackets.
_BRACES_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_QUOTES_OR_BRACKETS = bytes(b for b in range(256) if b not in b'"[]{}')
_STRING = re.compile(rb'"[^"]*"')


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


def decode_request(verb: Verb[RequestT, Any], data: bytes) -> RequestT:
    """The request of `verb` in `data`, or an `InvalidInputError` saying what is wrong with it.

    An empty body is the request with every field at its default; a verb that takes no arguments
    ignores its body. The coordinator's API server decodes every request here, and so can anyone
    holding a verb's name and a JSON body (an HTTP gateway) before `ClawClient.call`.
    """
    if not verb.request.__struct_fields__:
        return verb.request()
    try:
        return decode(data or b"{}", verb.request)
    except DecodeError as exc:
        raise InvalidInputError(str(exc).replace("cannot decode", "invalid request:", 1)) from None


def decode_event(data: bytes) -> TaskEvent:
    """Decode a task event (any variant of the `TaskEvent` union)."""
    event: TaskEvent = _decode(data, TaskEvent)
    return event


def nesting_exceeds(data: bytes, limit: int) -> bool:
    """Whether the JSON text `data` nests arrays and objects more than `limit` levels deep.

    No Python loop over the bytes and no recursion: escapes are dropped, then everything but quotes
    and brackets, then strings (a bracket inside one does not nest anything), then the innermost
    pairs, one level per pass, for at most `limit` passes. A text with no more brackets than the
    limit is answered by counting. Text that is not JSON answers False unless it is clearly deep:
    the decoder then says what is wrong with it.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    # Within strings, `\\` and then `\"` are the only escapes that matter; outside, JSON has none.
    text = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Dropping two adjacent quotes keeps every bracket's side of the string boundaries: the strings
    # with no bracket in them (nearly all) go by `replace`, the rest by a regex.
    text = text.translate(_BRACES_AS_BRACKETS, _NOT_QUOTES_OR_BRACKETS).replace(b'""', b"")
    if b'"' in text:
        text = _STRING.sub(b"", text)
    for level in range(limit):
        inner = text.replace(b"[]", b"")
        if len(inner) == len(text):
            return level + inner.count(b"[") > limit  # nothing left, or brackets never closed
        text = inner
    return b"[" in text


def _decode(data: bytes, type_: Any) -> Any:
    try:
        value = decoder(type_).decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"cannot decode {_name(type_)}: {exc}") from None
    except RecursionError:
        raise DecodeError(f"cannot decode {_name(type_)}: it is nested too deeply") from None
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
