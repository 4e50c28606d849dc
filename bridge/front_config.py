"""What a front process is configured with (built from the settings by bridge.front_setup);
its own module so that the front's parts (server, handshake, HTTP API) all depend on it and
not on each other."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field

from bridge.limits import FrontLimits


@dataclass
class FrontConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    auth_required: bool = True
    allowed_origins: tuple[str, ...] = ()
    max_connections: int = 10_000
    max_connections_per_sub: int = 100
    new_connections_per_ip_per_min: int = 10
    compression: bool = True
    reuse_port: bool = False
    # proxies (nginx) whose X-Forwarded-For names the real client, for the per-IP limit
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    tls: ssl.SSLContext | None = None  # wss:// and https:// on the same port
    limits: FrontLimits = field(default_factory=FrontLimits)
    # bytes queued for all clients of this process together (replies beyond it wait)
    queue_budget_bytes: int = 256 << 20
    # CSV exports: each holds a pool connection while it streams (bridge.exports)
    export_max_concurrent: int = 2
    export_max_per_subject: int = 1
    export_write_timeout_s: float = 30.0
    export_max_duration_s: float = 900.0
