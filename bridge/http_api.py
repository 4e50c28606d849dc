"""Plain HTTP on the WebSocket port: REST, CSV export planning, the dashboard, /health,
/metrics, /status and the o1 endpoints (/api/websocket/..., answered by bridge/o1_http.py).

:class:`HttpApi` answers from the front's state (stats, hub, sessions, pool, history) and
never touches a WebSocket. Errors go through the one ladder of bridge.errors. ``/metrics``
is JSON by default and Prometheus text (prometheus-client, a registry per front) when the
``Accept`` header asks for text/plain or OpenMetrics.
"""

from __future__ import annotations

import asyncio
import http
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from prometheus_client import CollectorRegistry
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from bridge import __version__, dashboard, o1_http, openapi, protocol, rest
from bridge.auth import AUTH_FAILURE_REASONS, JwtVerifier, Principal
from bridge.errors import http_error, json_response
from bridge.exports import ExportSlots
from bridge.front_config import FrontConfig
from bridge.front_metrics import FrontCollector, FrontSnapshot
from bridge.handshake import DIALECTS, REFUSAL_REASONS, origin_ok, repeated_header
from bridge.history import History, checked_query
from bridge.http_stream import StreamedResponse
from bridge.hub import Hub
from bridge.metrics import exposition
from bridge.subscriptions import CHANNELS

if TYPE_CHECKING:
    from bridge.front_metrics import FrontStats
    from bridge.session import Session

OPEN_TIMEOUT_S = 10.0
REST_DEADLINE_S = OPEN_TIMEOUT_S - 2


def text_response(
    status: int, text: str, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    data = text.encode()
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return Response(status, http.HTTPStatus(status).phrase, headers, data)


def method_not_allowed() -> Response:
    """405 for a REST path asked with another method than GET (websockets hands every method
    over; answering a POST or a HEAD as a GET would be wrong, a HEAD with a body too)."""
    response = json_response(
        405, {"error": "method_not_allowed", "message": "only GET is allowed here"}
    )
    response.headers["Allow"] = "GET"
    return response


def method(request: Request) -> str:
    """The request's method. websockets 15 and newer hand every method over (older ones
    refused all but GET before this code ran, and their Request has no ``method``)."""
    return getattr(request, "method", "GET")


class HttpApi:
    def __init__(
        self,
        config: FrontConfig,
        stats: FrontStats,
        hub: Hub,
        sessions: set[Session],
        verifier: JwtVerifier | None,
        database_check: Callable[[], bool] | None,
        pool: Any,
        history: History | None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.hub = hub
        self.sessions = sessions  # the front's live set, read only
        self.verifier = verifier
        self.database_check = database_check
        self.pool = pool
        self.history = history
        self.exports = ExportSlots(config.export_max_concurrent, config.export_max_per_subject)
        # the process's registry: under `up` it also holds the ingest's and the scheduler's
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(
            FrontCollector(
                self.snapshot,
                {
                    "dialect": DIALECTS,
                    "refusal": REFUSAL_REASONS,
                    "auth_failure": AUTH_FAILURE_REASONS,
                    "channel": CHANNELS,
                },
            )
        )

    # -- REST ------------------------------------------------------------------------------------
    async def rest(self, path: str, query: str, request: Request) -> Response:
        if method(request) != "GET":
            return method_not_allowed()
        if self.pool is None:
            return json_response(503, {"error": "unavailable", "message": "no database"})
        try:
            # plain HTTP shares the handshake's deadline: answer before it drops the request
            async with asyncio.timeout(REST_DEADLINE_S):
                body = await self._rest_body(path, query, request)
        except TimeoutError:
            message = f"no answer within {REST_DEADLINE_S:g} s; narrow the range or retry"
            return json_response(504, {"error": "timeout", "message": message})
        except Exception as exc:
            return http_error(exc, "REST request")
        if body is None:
            return json_response(404, {"error": "not_found", "message": "no such endpoint"})
        return json_response(200, body)

    async def _rest_body(self, path: str, query: str, request: Request) -> Any:
        assert self.pool is not None
        principal = self.principal(request)
        if path == "/api/v1/devices":
            return await rest.devices(self.pool, principal, None)
        if path.startswith("/api/v1/devices/"):
            # percent-decoded, as clients encode it (encodeURIComponent turns `:` into %3A);
            # what decodes to no device id (a `/`, invalid UTF-8) is a 404 in rest.devices
            device_id = unquote(path.removeprefix("/api/v1/devices/"))
            return await rest.devices(self.pool, principal, device_id)
        if path == "/api/v1/alerts":
            return await rest.alerts(self.pool, principal, query)
        if path == "/api/v1/telemetry":
            assert self.history is not None
            return await self.history.query(principal, rest.query_params(query))
        return None

    def principal(self, request: Request) -> Principal:
        """Who a REST request acts for: its Bearer token, else (BRIDGE_AUTH_REQUIRED=false)
        the same anonymous admin as the WebSocket handshake, so the dashboard's anonymous mode
        can list devices and load history; but only for the bridge's own pages and listed
        origins, or any web page could read everything through the visitor's browser."""
        authorization = request.headers.get("Authorization")
        if authorization is None and not self.config.auth_required:
            if not origin_ok(request, self.config):
                raise protocol.ClientError(403, "forbidden", "origin not allowed")
            return Principal("anonymous", frozenset({"admin"}))
        return rest.authenticate(self.verifier, authorization, time.time())

    async def plan_stream(self, request: Request) -> StreamedResponse | Response | None:
        """CSV export of /api/v1/telemetry streams; anything else (including a CSV request
        that fails validation, which then gets its JSON error) takes the normal path. An
        export over its budget (bridge.exports) is answered at once with 429/503."""
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != "/api/v1/telemetry" or self.history is None:
            return None
        if method(request) != "GET":  # rest() refuses it
            return None
        if repeated_header(request) is not None:
            return None
        try:
            params = rest.query_params(parts.query)
            if params.get("format") != "csv":
                return None
            principal = self.principal(request)
            query = checked_query(principal, params)
        except protocol.ClientError:
            return None
        refusal = self.exports.acquire(principal.sub)
        if refusal is not None:
            self.stats.refused["export"] += 1
            response = json_response(
                refusal.status,
                {
                    "error": refusal.error,
                    "message": refusal.message,
                    "retry_after": refusal.retry_after_s,
                },
            )
            response.headers["Retry-After"] = str(refusal.retry_after_s)
            return response
        subject = principal.sub
        return StreamedResponse(
            "text/csv; charset=utf-8",
            self.history.csv(query),
            "telemetry.csv",
            write_timeout_s=self.config.export_write_timeout_s,
            max_duration_s=self.config.export_max_duration_s,
            on_close=lambda: self.exports.release(subject),
        )

    # -- plain HTTP ------------------------------------------------------------------------------
    def http(self, path: str, request: Request) -> Response:
        try:
            return self._http(path, request)
        except Exception as exc:
            return http_error(exc, f"GET {path}")

    def _http(self, path: str, request: Request) -> Response:
        if method(request) != "GET":  # every plain HTTP answer here is a read
            return method_not_allowed()
        if dashboard.is_dashboard_path(path):  # a plain GET /: the page (with Upgrade: /ws)
            return dashboard.response(path, request)
        if path.startswith("/api/websocket/"):
            return o1_http.response(self, path)
        if path == "/api/openapi.json":  # public, like the seed documents
            return json_response(200, openapi.document())
        if path == "/health":
            mqtt_ok = self.hub.connected.is_set()
            db_ok = self.database_check() if self.database_check is not None else None
            checks = {"mqtt": "ok" if mqtt_ok else "down"}
            if db_ok is not None:
                checks["database"] = "ok" if db_ok else "down"
            healthy = mqtt_ok and db_ok is not False
            status = "healthy" if healthy else ("degraded" if mqtt_ok or db_ok else "unhealthy")
            code = 503 if status == "unhealthy" else 200
            return json_response(
                code, {"status": status, "checks": checks, "timestamp": protocol.now_iso()}
            )
        if path == "/metrics":
            accept = request.headers.get("Accept", "")
            if "text/plain" in accept or "openmetrics" in accept:
                body, content_type = exposition(self.registry, accept)
                return text_response(200, body.decode(), content_type)
            return json_response(200, self.metrics())
        if path == "/status":
            return json_response(200, self.status())
        return json_response(404, {"error": "not_found", "message": f"no endpoint {path}"})

    def snapshot(self) -> FrontSnapshot:
        """The front's numbers now: its own counters plus what each open session counts
        itself, in one pass over the sessions (scrape time only, never per message)."""
        s = self.stats
        received, delivered, conflated, dropped = s.received, s.delivered, s.conflated, s.dropped
        channels: Counter[str] = Counter()
        for session in self.sessions:
            if session.closed:
                continue  # closing: its counts are in the stats already (FrontStats.retire)
            queue = session.queue
            received += session.received
            delivered += queue.delivered
            conflated += queue.conflated
            dropped += queue.dropped
            for sub in session.subscriptions.values():
                channels[sub.selector.channel] += 1
        refused = dict(s.refused)
        exports_refused = refused.pop("export", 0)  # not a handshake: its own counter
        return FrontSnapshot(
            connections=dict(s.by_dialect),
            connections_total=s.total,
            handshakes_refused=refused,
            exports_refused=exports_refused,
            auth_failures=dict(s.auth_failures),
            subscriptions=dict(channels),
            broker_subscriptions=len(self.hub.subscriptions()),
            broker_connected=self.hub.connected.is_set(),
            broker_received=self.hub.received,
            deliveries=delivered,
            sent=s.sent,
            received=received,
            conflated=conflated,
            dropped=dropped,
            slow_closes=s.slow_consumer_closes,
            handling=s.handling,
            database_up=self.database_check() if self.database_check is not None else None,
        )

    def metrics(self) -> dict[str, Any]:
        s, snap = self.stats, self.snapshot()
        return {
            "rate_limiting": {"enabled": True, "messages_per_s": self.config.limits.messages_per_s},
            "connections": {
                "current": s.current,
                "peak": s.peak,
                "total": s.total,
                "by_dialect": dict(snap.connections),
                "refused": dict(s.refused),
                "closed_slow_consumer": s.slow_consumer_closes,
            },
            "auth_failures": dict(snap.auth_failures),
            "subscriptions": dict(snap.subscriptions),
            "messages": {
                "sent": s.sent,
                "received": snap.received,
                "delivered": snap.deliveries,
                "conflated": snap.conflated,
                "dropped": snap.dropped,
            },
            "broker": {
                "connected": snap.broker_connected,
                "subscriptions": snap.broker_subscriptions,
                "received": snap.broker_received,
            },
            "timestamp": protocol.now_iso(),
        }

    def status(self) -> dict[str, Any]:
        return {
            "service": "telemetry-bridge",
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.stats.started, 1),
            "connections": self.stats.current,
            "features": {
                "wss_enabled": self.config.tls is not None,
                "auth_required": self.config.auth_required,
                "rate_limiting": True,
                "compression": self.config.compression,
            },
            "timestamp": protocol.now_iso(),
        }
