"""Reading task inputs for `claw submit`: `--input JSON`, or `--input-file F` holding one JSON object
(`.json`) or one object per line (`.jsonl`); `-` reads standard input.

Inputs are checked here (valid JSON, an object) so a mistake is reported with its line number before
anything is sent, and forwarded as the exact bytes the user wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from common.errors import InvalidInputError

_check = msgspec.json.Decoder()


def read_inputs(inline: str | None, path: Path | None) -> list[msgspec.Raw]:
    """The input of each task to submit, in order."""
    if inline is not None and path is not None:
        raise InvalidInputError("give either --input or --input-file, not both")
    if path is not None:
        return _from_file(path)
    if inline is None:
        return [msgspec.Raw(b"{}")]
    return [_object(inline.encode(), "--input")]


def _from_file(path: Path) -> list[msgspec.Raw]:
    name = "standard input" if str(path) == "-" else str(path)
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {name}: {exc.strerror or exc}") from None
    if path.suffix == ".jsonl":
        return _lines(data, name)
    if path.suffix == ".json":
        return [_object(data, name)]
    # No telling suffix: one object if the whole file is one, else one object per line.
    try:
        return [_object(data, name)]
    except InvalidInputError:
        return _lines(data, name)


def _lines(data: bytes, name: str) -> list[msgspec.Raw]:
    inputs = []
    for number, line in enumerate(data.splitlines(), start=1):
        if line.strip():
            inputs.append(_object(line, f"{name} line {number}"))
    if not inputs:
        raise InvalidInputError(f"{name} holds no task (no non-empty line)")
    return inputs


def _object(text: bytes, where: str) -> msgspec.Raw:
    if not text.strip():
        raise InvalidInputError(f'{where} is empty; it must hold a JSON object like {{"text": "hi"}}')
    try:
        value = _check.decode(text)
    except msgspec.DecodeError as exc:
        if "truncated" in str(exc):  # msgspec's words for JSON that stops half-way
            raise InvalidInputError(f"{where} is not valid JSON: it ends before its JSON value does") from None
        raise InvalidInputError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        # The cluster's own limit (coordinator.max_input_depth, 64 by default) is checked when submitted.
        raise InvalidInputError(f"{where} nests arrays and objects too deeply (thousands of levels)") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f'{where} must be a JSON object like {{"text": "hi"}}, not a {_json_type(value)}')
    return msgspec.Raw(text.strip())


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """'90s', '15m', '12h', '7d' (or plain seconds) -> seconds."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:])
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        raise InvalidInputError(f"'{text}' is not a duration; use e.g. 30s, 15m, 12h or 7d") from None
    if seconds < 0:
        raise InvalidInputError(f"'{text}' is negative; a duration must be 0 or more")
    return seconds
