"""The gateway's settings: where it listens, which origins may call it, how long sessions last."""

from __future__ import annotations

from typing import Annotated

import msgspec

from common.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:8080"


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one gateway process serves (`claw gateway start` flags and `CLAW_GATEWAY_*` variables)."""

    host: str = "127.0.0.1"
    # 0 picks a free port (the tests); the URL is printed and written to `url_file` once listening.
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    # Origins allowed to call the API from a browser (CORS); none by default (the dashboard is same-origin).
    cors_origins: list[str] = []
    # A dashboard session lasts this long after the login.
    session_ttl_s: Annotated[float, msgspec.Meta(gt=0)] = 12 * 3600.0
    # Mark the session cookie Secure (set it when a TLS proxy is in front).
    secure_cookies: bool = False
    url_file: str | None = None


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port); one clear error otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen {text!r} is not HOST:PORT (for example {DEFAULT_LISTEN}, or 127.0.0.1:0)")
    return host.strip("[]"), int(port)
