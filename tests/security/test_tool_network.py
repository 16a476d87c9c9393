"""Probes: http.request and llm.chat aimed at the worker's own machine and network.

The NATS monitoring port and a local HTTP service (the fake API server, on 127.0.0.1) by every
spelling of a loopback address, by a name that resolves to one, through a redirect from an allowed
host, and the other non-public ranges (cloud metadata, private, CGNAT, multicast, unspecified): all
refused by default, with nothing reaching the service. Listed in `tools.http_allow_private`, the
same service answers (the refusal is the policy, not a broken client).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from common.states import TaskState
from communication.nats_server import EmbeddedNatsServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.security.conftest import cluster_config, start_cluster

KEY_ENV = "CLAW_TEST_LLM_KEY"


def spellings(port: int) -> list[str]:
    """Ways to write a URL of 127.0.0.1:port, and other addresses a worker must not reach."""
    return [
        f"http://127.0.0.1:{port}/echo",
        f"http://2130706433:{port}/echo",
        f"http://0x7f.1:{port}/echo",
        f"http://127.1:{port}/echo",
        f"http://[::ffff:127.0.0.1]:{port}/echo",
        f"http://[::ffff:7f00:1]:{port}/echo",
        f"http://localhost:{port}/echo",
        f"http://0.0.0.0:{port}/echo",
        f"http://[::]:{port}/echo",
        f"http://[::1]:{port}/echo",
        f"http://127.0.0.2:{port}/echo",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
        "http://224.0.0.1/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
    ]


async def test_http_request_refuses_loopback_and_private_addresses_in_every_form(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    config = cluster_config(nats_server, prefix, tmp_path, {"sandbox_root": str(tmp_path / "sandboxes")})
    port = urlsplit(openai_server.url).port
    assert port is not None
    targets = [*spellings(port), f"{nats_server.monitor_url}/varz", f"{nats_server.monitor_url}/connz"]
    async with start_cluster(config) as cluster:
        ids = [await cluster.submit("http.request", {"url": url, "timeout_s": 5}) for url in targets]
        outcomes = [await cluster.outcome(task_id) for task_id in ids]
    refused = [o for o in outcomes if "tools.http_allow_private" in (o.error_message or "")]
    assert [o.state for o in refused] == [TaskState.DEAD] * len(targets), [o.error_message for o in outcomes]
    assert [o.error_type for o in refused] == ["RefusedAddress"] * len(targets)
    assert openai_server.requests == []


async def test_allow_listed_addresses_are_reached(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    tools = {"sandbox_root": str(tmp_path / "sandboxes"), "http_allow_private": ["127.0.0.1/32", "::1"]}
    config = cluster_config(nats_server, prefix, tmp_path, tools)
    port = urlsplit(openai_server.url).port
    async with start_cluster(config) as cluster:
        direct = await cluster.run("http.request", {"url": f"http://127.0.0.1:{port}/echo"})
        by_name = await cluster.run("http.request", {"url": f"http://2130706433:{port}/echo"})
        monitor = await cluster.run("http.request", {"url": f"{nats_server.monitor_url}/varz"})
        other = await cluster.run("http.request", {"url": f"http://127.0.0.2:{port}/echo"})
    assert [o.result["status"] for o in (direct, by_name, monitor)] == [200, 200, 200]
    assert len(openai_server.requests) == 2
    assert other.error_type == "RefusedAddress"  # 127.0.0.2 is not 127.0.0.1/32


async def test_a_redirect_from_an_allowed_host_to_loopback_is_refused(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    tools = {"sandbox_root": str(tmp_path / "sandboxes"), "http_allow_private": ["127.0.0.1/32"]}
    config = cluster_config(nats_server, prefix, tmp_path, tools)
    port = urlsplit(openai_server.url).port
    hops = {
        "loopback": f"http://127.0.0.2:{port}/echo",
        "decimal": f"http://2130706434:{port}/echo",
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "ipv6 loopback": f"http://[::1]:{port}/echo",
    }
    async with start_cluster(config) as cluster:
        redirected = {
            name: await cluster.run(
                "http.request", {"url": f"{openai_server.url}/redirect?to={to}", "follow_redirects": True}
            )
            for name, to in hops.items()
        }
        not_followed = await cluster.run("http.request", {"url": f"{openai_server.url}/redirect?to={hops['loopback']}"})
        same_host = await cluster.run(
            "http.request", {"url": f"{openai_server.url}/redirect", "follow_redirects": True}
        )
    for name, outcome in redirected.items():
        assert outcome.error_type == "RefusedAddress", (name, outcome.error_message)
    assert not_followed.result["status"] == 302
    assert same_host.result["status"] == 200 and same_host.result["url"].endswith("/echo")
    assert [r.path for r in openai_server.requests].count("/echo") == 1


async def test_llm_chat_refuses_a_loopback_api_unless_allow_listed(
    nats_server: EmbeddedNatsServer,
    prefix: str,
    tmp_path: Path,
    openai_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-probe")
    messages = {"messages": [{"role": "user", "content": "hi"}]}
    for allowed in ([], ["127.0.0.1"]):
        tools = {
            "sandbox_root": str(tmp_path / "sandboxes"),
            "llm_base_url": openai_server.base_url.replace("127.0.0.1", "localhost"),
            "llm_api_key_env": KEY_ENV,
            "http_allow_private": allowed,
        }
        config = cluster_config(nats_server, f"{prefix}{len(allowed)}", tmp_path, tools)
        async with start_cluster(config) as cluster:
            outcome = await cluster.run("llm.chat", messages)
        if allowed:
            assert outcome.state == TaskState.SUCCEEDED, outcome.error_message
        else:
            assert outcome.error_type == "RefusedAddress"
            assert "localhost is 127.0.0.1, a loopback address" in (outcome.error_message or "")
            assert openai_server.completions() == []
    assert len(openai_server.completions()) == 1
