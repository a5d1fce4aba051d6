"""Where a request came from, and whether a gateway's callbacks may come from there.

The address is the socket's peer, unless that peer is a proxy we trust: then X-Forwarded-For
is read from the right (each proxy appends whom it heard from), past our trusted proxies, and
the first address that is not one of them is the client. Whatever stands left of it was
written by the client itself and proves nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from core.settings import Settings, SettingsError
from core.vocabulary import Gateway

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


@dataclass(frozen=True)
class CallbackSources:
    # Per gateway, the networks its callbacks may come from; a gateway not named: anywhere.
    allowed: Mapping[str, tuple[Network, ...]]
    trusted_proxies: tuple[Network, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> CallbackSources:
        """SettingsError, naming the setting, for a list that holds something not a network."""
        allowed = {}
        for gateway in Gateway:
            # Each gateway's setting found by its name, so that a gateway added is covered.
            listed = getattr(settings, f"{gateway}_callback_sources")
            if isinstance(listed, str) and listed.strip():
                setting = f"PAYSAGA_{gateway.upper()}_CALLBACK_SOURCES"
                allowed[str(gateway)] = networks(setting, listed)
        proxies = (settings.trusted_proxies or "").strip()
        trusted = networks("PAYSAGA_TRUSTED_PROXIES", proxies) if proxies else ()
        return cls(allowed=allowed, trusted_proxies=trusted)

    def refusal(self, gateway: str, peer: str | None, forwarded_for: list[str]) -> str | None:
        """Why a callback for `gateway` from this request may not be taken, or None."""
        networks = self.allowed.get(gateway)
        if networks is None:
            return None
        address = client_address(peer, forwarded_for, self.trusted_proxies)
        if address is None:
            return "the request's source address cannot be told"
        if _within(address, networks):
            return None
        return f"{gateway} callbacks are not taken from {str(address)!r}"


def client_address(
    peer: str | None, forwarded_for: list[str], trusted_proxies: tuple[Network, ...]
) -> Address | None:
    """The client's address, or None when it cannot be told (no peer, a hop that is not an
    address). `forwarded_for` is every X-Forwarded-For header, in the order received."""
    address = _address(peer)
    if address is None or not _within(address, trusted_proxies):
        return address
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None or not _within(address, trusted_proxies):
            return address
    # Every hop is one of our proxies: the request started at the first of them.
    return address


def networks(setting: str, value: str) -> tuple[Network, ...]:
    """The CIDRs of a comma-separated setting; SettingsError, naming it, for one that is not."""
    parsed = []
    for item in (part.strip() for part in value.split(",")):
        try:
            parsed.append(ip_network(item))
        except ValueError as wrong:
            raise SettingsError(
                f"{setting}: {item!r} is not a network such as 203.0.113.0/24 ({wrong})"
            ) from wrong
    return tuple(parsed)


def _address(text: str | None) -> Address | None:
    try:
        address = ip_address((text or "").strip())
    except ValueError:
        return None
    # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d: it is still that IPv4 peer.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, networks: Iterable[Network]) -> bool:
    return any(address in network for network in networks)
