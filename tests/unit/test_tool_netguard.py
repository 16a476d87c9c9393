"""Which addresses http.request and llm.chat may reach, and that the connection goes to the address
that was checked (no second DNS answer between check and connect)."""

from __future__ import annotations

import ipaddress
from typing import Any

import httpcore
import pytest

from common.errors import ConfigError
from worker.skills.tools import netguard
from worker.skills.tools.addresses import AddressPolicy, kind_of
from worker.skills.tools.netguard import GuardedBackend, RefusedAddress


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("fd12:3456::1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback (inside the IPv6 address)"),
        ("::ffff:10.0.0.1", "private (inside the IPv6 address)"),
        ("64:ff9b::a9fe:a9fe", "link-local (inside the IPv6 address)"),
        ("2002:c0a8:0101::", "private (inside the IPv6 address)"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("2002:0808:0808::", None),
    ],
)
def test_non_public_addresses_are_named_by_kind(address: str, kind: str | None) -> None:
    assert kind_of(ipaddress.ip_address(address)) == kind


def test_the_allow_list_takes_networks_addresses_and_host_names() -> None:
    policy = AddressPolicy.from_entries(["10.0.0.0/8", "127.0.0.1", "[::1]", "Model.Internal."])
    assert policy.refusal("x", ipaddress.ip_address("10.9.9.9")) is None
    assert policy.refusal("x", ipaddress.ip_address("::ffff:10.9.9.9")) is None  # the IPv4 inside counts
    assert policy.refusal("x", ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal("x", ipaddress.ip_address("::1")) is None
    assert policy.refusal("x", ipaddress.ip_address("127.0.0.2")) == "loopback"
    assert policy.refusal("model.internal", ipaddress.ip_address("192.168.7.7")) is None
    assert policy.refusal("other.internal", ipaddress.ip_address("192.168.7.7")) == "private"


@pytest.mark.parametrize("entry", ["", "*.internal", "http://x", "user@host", "a b"])
def test_an_invalid_allow_list_entry_is_a_config_error(entry: str) -> None:
    with pytest.raises(ConfigError, match="tools.http_allow_private"):
        AddressPolicy.from_entries([entry])


class _Recorder(httpcore.AsyncNetworkBackend):
    """Records where it was asked to connect, and connects nowhere."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def connect_tcp(self, host: str, port: int, **options: Any) -> httpcore.AsyncNetworkStream:
        self.hosts.append(host)
        raise httpcore.ConnectError("recorded")


async def test_the_connection_goes_to_the_checked_address_not_to_a_second_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resolver that answers a public address first and loopback afterwards (DNS rebinding): the
    name is resolved once, and the connection is made to that very address."""
    answers = [[ipaddress.ip_address("93.184.216.34")], [ipaddress.ip_address("127.0.0.1")]]
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> list[Any]:
        calls.append(host)
        return answers[len(calls) - 1]

    monkeypatch.setattr(netguard, "_resolve", rebinding)
    backend = GuardedBackend(AddressPolicy(), "http.request")
    recorder = _Recorder()
    backend._inner = recorder  # type: ignore[assignment]
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("rebind.example", 80)
    assert (calls, recorder.hosts) == (["rebind.example"], ["93.184.216.34"])
    with pytest.raises(RefusedAddress, match="rebind.example is 127.0.0.1, a loopback address"):
        await backend.connect_tcp("rebind.example", 80)
    assert recorder.hosts == ["93.184.216.34"]


async def test_a_name_with_public_and_loopback_answers_connects_only_to_the_public_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def both(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("93.184.216.34")]

    monkeypatch.setattr(netguard, "_resolve", both)
    backend = GuardedBackend(AddressPolicy(), "http.request")
    recorder = _Recorder()
    backend._inner = recorder  # type: ignore[assignment]
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("mixed.example", 80)
    assert recorder.hosts == ["93.184.216.34"]


async def test_unix_sockets_are_refused() -> None:
    with pytest.raises(RefusedAddress, match="Unix sockets"):
        await GuardedBackend(AddressPolicy(), "llm.chat").connect_unix_socket("/run/docker.sock")
