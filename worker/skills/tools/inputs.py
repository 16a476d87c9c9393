"""Checks of the tool skills' input fields; every refusal names the skill and the field."""

from __future__ import annotations

import math
import re
from typing import Any

from common.errors import InvalidInputError

MAX_TIMEOUT_S = 24 * 3600.0
HEADER_NAME_PATTERN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
HEADER_VALUE_PATTERN = re.compile(r"^[\t\x20-\x7e]*$")


def check_fields(skill: str, input: dict[str, Any], known: tuple[str, ...]) -> None:
    """Refuse fields the skill does not know: a typo must not silently fall back to a default."""
    unknown = sorted(set(input) - set(known))
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise InvalidInputError(f"{skill}: unknown field(s) {names} (known: {', '.join(known)})")


def string(skill: str, input: dict[str, Any], field: str, default: str | None = None) -> str:
    """A required string field (or `default` when given and the field is absent)."""
    value = input.get(field, default)
    if not isinstance(value, str):
        raise InvalidInputError(f"{skill}: '{field}' must be a string")
    return value


def optional_string(skill: str, input: dict[str, Any], field: str) -> str | None:
    """A string field that may be absent or null."""
    value = input.get(field)
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{skill}: '{field}' must be a string")
    return value


def boolean(skill: str, input: dict[str, Any], field: str, default: bool = False) -> bool:
    """A boolean field."""
    value = input.get(field, default)
    if not isinstance(value, bool):
        raise InvalidInputError(f"{skill}: '{field}' must be true or false")
    return value


def choice(skill: str, input: dict[str, Any], field: str, options: tuple[str, ...], default: str) -> str:
    """A string field that must be one of `options`."""
    value = input.get(field, default)
    if value not in options:
        raise InvalidInputError(f"{skill}: '{field}' must be one of {', '.join(options)}")
    return str(value)


def timeout_s(skill: str, input: dict[str, Any], field: str = "timeout_s") -> float | None:
    """An optional positive number of seconds (at most a day)."""
    value = input.get(field)
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 < value <= MAX_TIMEOUT_S
    ):
        raise InvalidInputError(f"{skill}: '{field}' must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}")
    return float(value)


def string_map(skill: str, input: dict[str, Any], field: str) -> dict[str, str]:
    """An optional object of string values (environment, headers)."""
    value = input.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidInputError(f"{skill}: '{field}' must be an object of string values")
    return dict(value)


def string_list(skill: str, input: dict[str, Any], field: str) -> list[str]:
    """A required, non-empty list of strings."""
    value = input.get(field)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"{skill}: '{field}' must be a non-empty list of strings")
    return list(value)


def headers(skill: str, input: dict[str, Any], field: str, refused: tuple[str, ...] = ()) -> dict[str, str]:
    """An optional object of HTTP headers: token names, printable ASCII values, none of `refused`."""
    value = string_map(skill, input, field)
    for name, text in value.items():
        if not HEADER_NAME_PATTERN.fullmatch(name):
            raise InvalidInputError(f"{skill}: '{field}' has an invalid header name {name!r}")
        if not HEADER_VALUE_PATTERN.fullmatch(text):
            raise InvalidInputError(f"{skill}: '{field}': the value of {name} must be printable ASCII")
        if name.lower() in refused:
            raise InvalidInputError(f"{skill}: '{field}' may not set {name}")
    return value
