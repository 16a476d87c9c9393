"""JetStream's fsync interval reaches the embedded nats-server: `claw nats start --sync-interval always`
and `jetstream.sync_interval` (the setting `claw up` reads too) show in the server's own /varz, with
authentication still on; a value nats-server would not read is refused with one line."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cli.credentials import prepare_server
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from tests.helpers import ProcessPool, child_env, wait_until

pytestmark = pytest.mark.e2e


def _jetstream_config(monitor_url: str) -> dict[str, Any]:
    """The JetStream settings the running server reports (/varz)."""
    with urllib.request.urlopen(f"{monitor_url}/varz", timeout=5) as response:
        varz = json.load(response)
    assert isinstance(varz["jetstream"]["config"], dict)
    return {**varz["jetstream"]["config"], "auth_required": varz.get("auth_required", False)}


def _listening(text: str) -> dict[str, Any] | None:
    """The JSON object `claw nats start --json` prints (indented, among log lines), once it is there."""
    decoder = json.JSONDecoder()
    for start in [m.start() for m in re.finditer(r"(?m)^\{", text)]:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict) and "monitor_url" in value:
            return value
    return None


def test_nats_start_sync_interval_always_reaches_the_server_with_authentication_on(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    try:
        server = pool.spawn(
            "nats", "nats", "start", "--port", "0", "--http-port", "0", "--store-dir", str(tmp_path / "s"),
            "--sync-interval", "always", "--json",
        )  # fmt: skip
        ready = wait_until(lambda: _listening(server.output()), timeout_s=30, what="where the server listens")
        config = _jetstream_config(ready["monitor_url"])
        assert config.get("sync_always") is True, config
        assert config["auth_required"] is True  # the auth config is still read (included by ours)
        assert config["store_dir"].startswith(str(tmp_path / "s"))
    finally:
        pool.stop_all()


def test_the_config_setting_sets_a_duration_and_a_bad_value_is_refused(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(CLAW_JETSTREAM_SYNC_INTERVAL="10s"), tmp_path)
    try:
        server = pool.spawn(
            "nats", "nats", "start", "--port", "0", "--http-port", "0", "--store-dir", str(tmp_path / "s"),
            "--no-auth", "--json",
        )  # fmt: skip
        ready = wait_until(lambda: _listening(server.output()), timeout_s=30, what="where the server listens")
        config = _jetstream_config(ready["monitor_url"])
        assert config["sync_interval"] == 10 * 10**9 and not config.get("sync_always"), config
        refused = pool.run("nats", "start", "--store-dir", str(tmp_path / "t"), "--sync-interval", "soon")
        assert refused.returncode != 0
        assert refused.stderr.strip().splitlines() == [
            "error: --sync-interval 'soon': use 'always' or a duration such as 10s, 1m or 500ms"
        ]
    finally:
        pool.stop_all()


def test_without_the_setting_the_server_keeps_its_default(tmp_path: Path) -> None:
    """No config file of ours is written: the server runs as before (auth config or none)."""
    auth_dir = tmp_path / "auth"
    prepare_server(auth_dir)
    server = EmbeddedNatsServer(NatsServerOptions(store_dir=tmp_path / "s", port=0, http_port=0, auth_dir=auth_dir))
    with server:
        config = _jetstream_config(server.monitor_url)
        assert not config.get("sync_always") and config["sync_interval"] == 120 * 10**9
        assert config["auth_required"] is True
        assert not (tmp_path / "s" / "claw-nats-server.conf").exists()
