"""Which browser origins may use the front; pure (headers in, a yes or no out).

Browsers attach ``Origin`` to WebSocket handshakes and to cross-origin requests, and let any
page open a WebSocket to any host. With authentication required that is harmless (the page
needs a token); with ``BRIDGE_AUTH_REQUIRED=false`` every connection is an anonymous admin,
so any web page a developer visits could drive the bridge. In that mode only the bridge's
own pages (same host and port, loopback names counting as one host) and the origins listed
in ``BRIDGE_ALLOWED_ORIGINS`` are let in.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_address(origin: str) -> tuple[str, int] | None:
    """(host, port) of an ``Origin`` header (``https://dash.example`` -> dash.example, 443);
    None for ``null`` and anything that is not an origin."""
    try:
        parts = urlsplit(origin.strip())
        host, port = parts.hostname, parts.port
    except ValueError:  # a port out of range or a malformed IPv6 literal
        return None
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if not host or default is None:
        return None
    return host.lower(), port if port is not None else default


def host_address(host_header: str, origin_scheme_port: int) -> tuple[str, int] | None:
    """(host, port) of a ``Host`` header. Without a port the client used its scheme's
    default port, which is the origin's default port when the origin is the same site
    (a proxy passing ``Host: $host`` drops the port it listened on)."""
    try:
        parts = urlsplit("//" + host_header.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host.lower(), port if port is not None else origin_scheme_port


def same_host(origin: str, host_header: str | None) -> bool:
    """Whether ``origin`` names the host and port the request was sent to; loopback names
    (localhost, 127.0.0.1, ::1) are interchangeable, so the dashboard opened as
    http://localhost:8765 may talk to 127.0.0.1:8765."""
    source = origin_address(origin)
    if source is None or not host_header:
        return False
    scheme = urlsplit(origin.strip()).scheme.lower()
    target = host_address(host_header, _DEFAULT_PORTS[scheme])
    if target is None or source[1] != target[1]:
        return False
    return source[0] == target[0] or (_loopback(source[0]) and _loopback(target[0]))


def origin_allowed(
    origin: str | None,
    host_header: str | None,
    listed: tuple[str, ...],
    *,
    anonymous_admin: bool,
) -> bool:
    """Whether a request carrying ``origin`` may go on.

    No ``Origin``: not a browser page (curl, the CLI, a device), which could send any Origin
    it liked anyway. Listed origins and the bridge's own pages are always allowed. Anything
    else is allowed only when authentication is required and no list was configured (the
    behaviour the project always had: a token is the gate)."""
    if origin is None:
        return True
    if origin in listed or same_host(origin, host_header):
        return True
    return not listed and not anonymous_admin
