"""Who the client is: the TCP peer, or, behind a proxy the admin trusts, the client it forwarded.

``BLACKROAD_TRUSTED_PROXIES`` lists the proxies (IP addresses and CIDR
networks, comma-separated; none by default). A request whose TCP peer is one
of them is from the client its ``X-Forwarded-For`` names: the right-most
address there that is not itself a trusted proxy (each proxy appends the
peer it saw, so everything to the left of that address was written by the
client and proves nothing). Its ``X-Forwarded-Proto`` (http or https) is the
scheme the client used, which decides whether cookies are marked Secure.
From any other peer both headers are ignored: anyone can send them.

``ProxyHeaders``, the outermost middleware, decides this once per request
and puts the answer in the ASGI scope (``client``, ``scheme``), so the
lockout, the request log and its audit record all see the real client;
``client_address`` is how they read it. The server's own (uvicorn's)
handling of these headers is off (``cli/serve.py``): it trusted loopback
peers by default.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from blackroad.browser_guard import split_host
from blackroad.errors import BlackRoadError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"  # a request with no peer address (not over TCP)
FORWARDED_SCHEMES = frozenset({"http", "https"})


def _address(text: str) -> Address | None:
    """An IP address as a peer or an ``X-Forwarded-For`` entry gives it (a port is dropped)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:  # with a port: 10.0.0.5:4711, [2001:db8::1]:4711
        try:
            address = ipaddress.ip_address(split_host(text)[0])
        except ValueError:
            return None
    # An IPv4 client of a dual-stack socket is seen as ::ffff:a.b.c.d.
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address


@dataclass(frozen=True)
class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, listed: str) -> TrustedProxies:
        """From ``BLACKROAD_TRUSTED_PROXIES``: addresses and CIDR networks, comma-separated."""
        networks = []
        for entry in (part.strip() for part in listed.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise BlackRoadError(
                    f"BLACKROAD_TRUSTED_PROXIES: {entry!r} is not an IP address or a network "
                    "(such as 10.0.0.5 or 10.0.0.0/24)"
                ) from None
        return cls(tuple(networks))

    def trusts(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client(self, peer: str, forwarded_for: Iterable[str]) -> str:
        """The client behind ``peer``, given the ``X-Forwarded-For`` headers it sent.

        ``peer`` itself unless it is a trusted proxy; else, walking the list
        from the right past the trusted proxies, the first other address. An
        entry that is no address ends the walk (nothing further left can be
        believed), as does the start of the list: the client is then the
        last trusted hop.
        """
        hop = _address(peer)
        if hop is None or not self.trusts(hop):
            return peer
        entries = [entry.strip() for header in forwarded_for for entry in header.split(",")]
        for entry in reversed(entries):
            address = _address(entry)
            if address is None:
                break
            hop = address
            if not self.trusts(hop):
                break
        return str(hop)


class ProxyHeaders:
    """Puts the real client (and scheme) of a request from a trusted proxy into its scope."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if (
            scope["type"] == "http"
            and self.proxies.networks  # none listed (the default): nothing to look at
            and peer
            and self.proxies.trusts(_address(peer[0]))
        ):
            forwarded_for, proto = [], None
            for name, value in scope["headers"]:
                if name == b"x-forwarded-for":
                    forwarded_for.append(value.decode("latin-1"))
                elif name == b"x-forwarded-proto":
                    proto = value.decode("latin-1").split(",")[-1].strip().lower()
            client = self.proxies.client(peer[0], forwarded_for)
            if client != peer[0]:
                scope["client"] = (client, 0)  # the client's port is the proxy's to know
            if proto in FORWARDED_SCHEMES:
                scope["scheme"] = proto
        await self.app(scope, receive, send)


def client_address(scope: Scope) -> str:
    """The client's address: what lockouts count, and the request log and audit record keep."""
    client = scope.get("client")
    return str(client[0]) if client else UNKNOWN
