"""Handshake policy of the front: which paths upgrade, which origins and addresses may
connect, and the request headers the policy reads; pure (a request in, a decision out)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from websockets.http11 import Request

from bridge.origins import origin_allowed

if TYPE_CHECKING:
    from bridge.server import FrontConfig

WS_PATHS = {
    "/ws": None,
    "/ws/telemetry": "telemetry",
    "/ws/alerts": "alerts",
    "/ws/devices": "devices",
    "/ws/system": "system",
    "/api/v1/events": None,
    "/api/websocket": None,
    "/v1/ws": None,
}

# Headers the front reads with Headers.get(), which raises when a header is repeated: a
# request repeating one gets a 400 instead of a failed handshake (HTTP 500 or a drop).
_SINGLE_HEADERS = ("Host", "Origin", "Authorization", "Upgrade", "Accept", "If-None-Match")


def repeated_header(request: Request) -> str | None:
    for name in _SINGLE_HEADERS:
        if len(request.headers.get_all(name)) > 1:
            return name
    return None


def origin_ok(request: Request, config: FrontConfig) -> bool:
    return origin_allowed(
        request.headers.get("Origin"),
        request.headers.get("Host"),
        config.allowed_origins,
        anonymous_admin=not config.auth_required,
    )


def client_ip(
    peer: str,
    forwarded_for: str | None,
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> str:
    """The address a per-IP limit should count: the peer, unless the peer is a trusted proxy;
    then the right-most address in X-Forwarded-For that is not a trusted proxy itself
    (addresses further left are whatever the client claimed and cannot be believed)."""

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in trusted)

    if not trusted or not forwarded_for or not is_trusted(peer):
        return peer
    for hop in reversed(forwarded_for.split(",")):
        if not is_trusted(hop):
            hop = hop.strip()
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage in the header: count the proxy itself
    return peer
