"""Which IP addresses http.request and llm.chat may connect to.

Only public (globally routable, unicast) addresses, unless `tools.http_allow_private` lists the
address (an IP or CIDR) or the host name the URL gave. Refused: loopback (127/8, ::1), link-local
(169.254/16 with the cloud metadata service, fe80::/10), private (10/8, 172.16/12, 192.168/16,
fc00::/7), shared CGNAT space (100.64/10), multicast, unspecified (0.0.0.0, ::, which reach the local
machine), reserved and documentation ranges; and every IPv6 form that carries one of those IPv4
addresses (IPv4-mapped ::ffff:a.b.c.d, 6to4 2002::/16, NAT64 64:ff9b::/96). The check is made on
the address a name resolves to, never on how the URL spells it, so `2130706433`, `0x7f.1`, `127.1`
and `localhost` are all 127.0.0.1 here (netguard.py connects to the checked address).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from common.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def kind_of(address: IPAddress) -> str | None:
    """What makes `address` non-public ("loopback", "private", ...), or None for a public one."""
    for embedded in _embedded_ipv4(address):
        kind = kind_of(embedded)
        if kind is not None:
            return f"{kind} (inside the IPv6 address)"
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address in CGNAT if isinstance(address, ipaddress.IPv4Address) else False, "shared (CGNAT)"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, "site-local"),
        (not address.is_global, "non-public"),
    )
    return next((kind for refused, kind in checks if refused), None)


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address in NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The exceptions `tools.http_allow_private` makes: networks and host names."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_entries(cls, entries: list[str]) -> AddressPolicy:
        """Parse the setting; an entry that is neither a network nor a host name is a ConfigError."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in entries:
            text = entry.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            if not text or any(c in text for c in "/*@ :[]"):
                raise ConfigError(
                    f"tools.http_allow_private: {entry!r} must be an IP address, a CIDR network or a host name"
                )
            hosts.add(text)
        return cls(tuple(networks), frozenset(hosts))

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why connecting to `address` (which `host` resolved to) is refused, or None if allowed."""
        kind = kind_of(address)
        if kind is None or host.lower().rstrip(".") in self.hosts:
            return None
        for candidate in (address, *_embedded_ipv4(address)):
            if any(candidate.version == net.version and candidate in net for net in self.networks):
                return None
        return kind
