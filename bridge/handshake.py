"""Handshake policy of the front: which paths upgrade, which origins, addresses and tokens
may connect (:class:`Gate`, refusing with 401, 403, 429 or 503), and the per-subject count of
open connections it polices. No I/O: a request in, an admission or a refusal out.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from websockets.http11 import Request, Response

from bridge.auth import AuthError, JwtVerifier, Principal
from bridge.errors import json_response
from bridge.front_config import FrontConfig
from bridge.limits import WindowCounter
from bridge.origins import origin_allowed
from bridge.protocol import ClientError

if TYPE_CHECKING:
    from bridge.connection import FrontStats

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

# The dialect a connection speaks, by the path it connected to: each seed document's clients
# use their own (docs/protocol.md, section 8); the bare host "/" is Zhineng's
# (bridge/server.py). The /ws family is Valtronics', which is also the bridge's own protocol
# (its dashboard and Python client). The label values of bridge_connections.
WS_DIALECTS = {
    "/ws": "valtronics",
    "/ws/telemetry": "valtronics",
    "/ws/alerts": "valtronics",
    "/ws/devices": "valtronics",
    "/ws/system": "valtronics",
    "/api/v1/events": "nexus",
    "/api/websocket": "o1",
    "/v1/ws": "openframe",
}
DIALECTS = ("valtronics", "openframe", "nexus", "o1", "zhineng")
# Why a handshake was refused (bridge_handshakes_refused_total{reason}).
REFUSAL_REASONS = ("origin", "capacity", "ip_rate", "auth", "per_sub")

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


@dataclass(frozen=True, slots=True)
class Admission:
    """A handshake let through: who (None: authenticates by message) and how to greet."""

    principal: Principal | None
    channel: str | None  # on /ws/{channel}, the channel a subscribe names by default
    greet: bool
    dialect: str = "valtronics"  # one of DIALECTS


class Gate:
    """The handshake policy of one front and the counts it polices: new connections per
    client address (a sliding minute) and open connections per token subject."""

    def __init__(
        self, config: FrontConfig, verifier: JwtVerifier | None, stats: FrontStats
    ) -> None:
        self.config = config
        self.verifier = verifier
        self.stats = stats  # reads ``current``, counts ``refused`` (REFUSAL_REASONS)
        self._per_sub: Counter[str] = Counter()
        self._per_ip = WindowCounter(config.new_connections_per_ip_per_min, 60.0)

    def admit(
        self,
        peer: str,
        request: Request,
        query: str,
        channel: str | None,
        greet: bool,
        dialect: str = "valtronics",
    ) -> Admission | Response:
        """A WebSocket handshake from ``peer``: let through, or the HTTP refusal."""
        if not origin_ok(request, self.config):
            self.stats.refused["origin"] += 1
            return json_response(403, {"error": "forbidden", "message": "origin not allowed"})
        if self.stats.current >= self.config.max_connections:
            self.stats.refused["capacity"] += 1
            return json_response(
                503, {"error": "unavailable", "message": "server at connection capacity"}
            )
        forwarded = None
        if self.config.trusted_proxies:  # a repeated header is legal: join its values
            forwarded = ",".join(request.headers.get_all("X-Forwarded-For")) or None
        ip = client_ip(peer, forwarded, self.config.trusted_proxies)
        wait = self._per_ip.hit(ip, time.monotonic())
        if wait:
            self.stats.refused["ip_rate"] += 1
            resp = json_response(
                429, {"error": "rate_limit_exceeded", "retry_after": round(wait, 1)}
            )
            resp.headers["Retry-After"] = str(int(wait) + 1)
            return resp
        token = handshake_token(request, query)
        principal = None
        if token is not None:
            if self.verifier is None:
                self.stats.refused["auth"] += 1
                return json_response(
                    401, {"error": "unauthorized", "message": "authentication not configured"}
                )
            try:
                principal = self.verifier.verify(token, now=time.time())
            except AuthError as exc:
                self.stats.refused["auth"] += 1
                return json_response(401, {"error": exc.error, "message": exc.message})
            if self._per_sub[principal.sub] >= self.config.max_connections_per_sub:
                self.stats.refused["per_sub"] += 1
                return json_response(
                    429, {"error": "rate_limit_exceeded", "message": "too many connections"}
                )
        elif not self.config.auth_required:
            principal = Principal("anonymous", frozenset({"admin"}))
        return Admission(principal, channel, greet, dialect)

    def opened(self, principal: Principal) -> None:
        """A connection admitted with ``principal`` at the handshake has opened."""
        self._per_sub[principal.sub] += 1

    def count_sub(self, current: Principal | None, principal: Principal) -> None:
        """Admit a connection that authenticates by message, under the same per-subject limit
        as the handshake; raises ClientError 429 to refuse it.

        Called by the session before it takes ``principal``. A session that already has one
        (``current``) is refreshing its token: the subject is the same (the session refuses
        another) and was counted when it first authenticated, here or at the handshake. Every
        session with a principal is thus counted exactly once, and :meth:`closed` uncounts it.
        """
        if current is not None:
            return
        if self._per_sub[principal.sub] >= self.config.max_connections_per_sub:
            self.stats.refused["per_sub"] += 1
            raise ClientError(429, "rate_limit_exceeded", "too many connections")
        self._per_sub[principal.sub] += 1

    def closed(self, principal: Principal) -> None:
        self._per_sub[principal.sub] -= 1
        if self._per_sub[principal.sub] <= 0:
            del self._per_sub[principal.sub]


def handshake_token(request: Request, query: str) -> str | None:
    """The token of a handshake: ``Authorization: Bearer``, else ``?token=`` (browsers cannot
    set headers on a WebSocket)."""
    auth = request.headers.get("Authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if "token" in (params := parse_qs(query)):
        return params["token"][0]
    return None
