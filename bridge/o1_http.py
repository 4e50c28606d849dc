"""The o1 seed's HTTP endpoints (/api/websocket/health, /metrics, /stats; docs/protocol.md,
section 8.4): the front's own numbers in the shapes that document gives them.

Read from :class:`~bridge.http_api.HttpApi`'s state at request time, never per message.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from websockets.http11 import Response

from bridge import protocol
from bridge.errors import json_response

if TYPE_CHECKING:
    from bridge.http_api import HttpApi


def response(api: HttpApi, path: str) -> Response:
    """The o1 seed's shapes of health, stats and metrics."""
    s = api.stats
    if path == "/api/websocket/health":
        ok = api.hub.connected.is_set()
        body = {
            "status": "healthy" if ok else "unhealthy",
            "connectionCount": s.current,
            "timestamp": protocol.now_iso(),
        }
        return json_response(200 if ok else 503, body)
    m = api.metrics()
    if path == "/api/websocket/metrics":
        uptime = int(time.monotonic() - s.started)
        cpu = os.times()
        return json_response(
            200,
            {
                "connections": {"current": s.current, "peak": s.peak, "total": s.total},
                "messages": m["messages"],
                "performance": {
                    "uptime": _duration(uptime),
                    "memoryUsage": f"{_rss_mb():.1f}MB",
                    "cpuUsage": f"{100 * (cpu.user + cpu.system) / max(1, uptime):.1f}%",
                },
            },
        )
    if path == "/api/websocket/stats":
        return json_response(200, _stats(api, m))
    return json_response(404, {"error": "not_found", "message": f"no endpoint {path}"})


def _stats(api: HttpApi, m: dict[str, Any]) -> dict[str, Any]:
    s = api.stats
    queued = sum(len(x.queue) for x in api.sessions)
    sent, received = m["messages"]["sent"], m["messages"]["received"]
    errors = s.errors + sum(x.errors for x in api.sessions)
    handling = sorted(s.handling_ms)

    def rank(q: float) -> float:
        return round(handling[int(q * (len(handling) - 1))], 3) if handling else 0.0

    return {
        "totalConnections": s.current,
        # active: connections with a subscription; idle: those without one
        "poolStats": {
            "active": sum(1 for x in api.sessions if x.subscriptions),
            "idle": sum(1 for x in api.sessions if not x.subscriptions),
            "total": s.current,
        },
        # a batch: the frames written to one client's connection at once
        "batcherStats": {
            "batchesProcessed": s.batches,
            "messagesProcessed": sent,
            "averageBatchSize": round(sent / s.batches, 2) if s.batches else 0.0,
            "queuedMessages": queued,
        },
        # the messages clients sent, and how many were answered with an error
        "processorStats": {
            "messagesProcessed": received,
            "errors": errors,
            "successRate": round(100 * max(0, received - errors) / received, 2)
            if received
            else 100.0,
            "dropped": m["messages"]["dropped"],
        },
        # handling one client message, in milliseconds (the most recent 1,000)
        "performanceMetrics": {
            "averageResponseTime": round(sum(handling) / len(handling), 3) if handling else 0.0,
            "p95": rank(0.95),
            "p99": rank(0.99),
            "unit": "ms",
        },
        # a count only: the filters name other clients' devices and sessions
        "brokerSubscriptionCount": len(api.hub.subscriptions()),
    }


def _duration(seconds: int) -> str:
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h {seconds % 3600 // 60}m"


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return 0.0
