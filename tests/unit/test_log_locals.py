"""Logged tracebacks never carry local variables (they held raw request bytes and secrets)."""

from __future__ import annotations

import io
from typing import Literal

import pytest

from common.config import LogSettings
from common.log import configure_logging, get_logger

SECRET = "sk-live-d00d1e5eca1ab1e"  # a marker to look for, not a credential


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _fail_with_a_secret_in_locals(data: bytes) -> None:
    token = data.decode()
    raise ValueError(f"could not handle a request of {len(token)} characters")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_logged_tracebacks_show_frames_but_no_locals(fmt: Literal["json", "console"]) -> None:
    stream: io.StringIO = _Tty() if fmt == "console" else io.StringIO()
    configure_logging(LogSettings(format=fmt), process="test", stream=stream)
    try:
        _fail_with_a_secret_in_locals(SECRET.encode())
    except ValueError:
        get_logger("test").exception("api.failed", verb="submit")
    out = stream.getvalue()
    assert "_fail_with_a_secret_in_locals" in out and "could not handle a request" in out
    assert SECRET not in out
