"""Forwarding headers: believed from TRUSTED_PROXIES only, and removed from every request.

Behind nginx, the TCP peer of the web process is nginx, and the client's address and scheme arrive in
X-Forwarded-For and X-Forwarded-Proto. Anyone can send those headers, so they are believed only when the
peer is in TRUSTED_PROXIES: the client is then the right-most X-Forwarded-For entry that is not a trusted
proxy (entries to its left were written by the client itself), and the scheme is the right-most
X-Forwarded-Proto value (http or https; ws or wss on a WebSocket).

Whoever the peer, these headers never reach Django or Channels: what they say is in the ASGI scope
(`client`, `scheme`) or nowhere. So REMOTE_ADDR is the client for DRF's throttles (NUM_PROXIES = 0) and
core.throttles, request.is_secure() follows the scheme (no SECURE_PROXY_SSL_HEADER), and a client cannot
fake either by sending the headers itself.
"""

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from asgiref.typing import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDING_HEADERS = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-proto",
        b"x-real-ip",
    }
)
SCHEMES = {
    "http": {"http": "http", "https": "https"},
    "websocket": {"http": "ws", "https": "wss"},
}


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as written in a scope or a header; an IPv4-mapped IPv6 address as its IPv4 form."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _entries(values: list[bytes]) -> list[str]:
    """Every comma-separated entry of a header that may be sent several times, in order."""
    return [
        entry.strip() for value in values for entry in value.decode("latin-1").split(",") if entry.strip()
    ]


class ProxyHeadersMiddleware:
    """Wraps the whole ASGI application (HTTP and WebSocket scopes)."""

    def __init__(self, app: ASGI3Application, trusted: Iterable[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] in SCHEMES:
            scope = self.resolve(scope)
        await self.app(scope, receive, send)

    def trusts(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.trusted)

    def resolve(self, scope: Scope) -> dict[str, Any]:
        """A copy of `scope` without forwarding headers, and with `client` and `scheme` taken from them when
        the peer is trusted."""
        forwarded_for: list[bytes] = []
        forwarded_proto: list[bytes] = []
        kept = []
        for name, value in scope["headers"]:
            lower = name.lower()
            if lower == b"x-forwarded-for":
                forwarded_for.append(value)
            elif lower == b"x-forwarded-proto":
                forwarded_proto.append(value)
            if lower not in FORWARDING_HEADERS:
                kept.append((name, value))
        resolved = {**scope, "headers": kept}
        peer = scope.get("client")
        if not peer or not self.trusts(peer[0]):
            if len(kept) < len(scope["headers"]):
                logger.debug("Forwarding headers from untrusted peer %s dropped", peer and peer[0])
            return resolved
        client = self.client_from(_entries(forwarded_for))
        if client is not None:
            resolved["client"] = (client, 0)  # X-Forwarded-For carries no port
        protos = _entries(forwarded_proto)
        scheme = SCHEMES[scope["type"]].get(protos[-1].lower()) if protos else None
        if scheme is not None:
            resolved["scheme"] = scheme
        return resolved

    def client_from(self, forwarded_for: list[str]) -> str | None:
        """The right-most entry that is not a trusted proxy (the left-most if all are); None when that
        entry is not an address (the peer stays the client)."""
        if not forwarded_for:
            return None
        untrusted = [entry for entry in forwarded_for if not self.trusts(entry)]
        ip = _ip(untrusted[-1] if untrusted else forwarded_for[0])
        return str(ip) if ip is not None else None
