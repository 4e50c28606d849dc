"""The WebSocket/HTTP front: the ``websockets`` server, its lifecycle and configuration.

HTTP endpoints share the port (``process_request``): plain HTTP and REST are answered by
bridge.http_api, CSV exports stream within their own budget (bridge.exports: 429 past one per
subject, 503 past the process's limit). A WebSocket handshake is let through or refused by
bridge.handshake (401 for a bad token, 403 for a foreign Origin, 429 for too many new
connections from one IP or for one subject, 503 past the total connection limit). Each client
then belongs to its bridge.connection.Connection: a reader loop and one writer task draining
its bounded queue; fan-out never awaits a socket.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from bridge import __version__, protocol
from bridge.auth import CountingVerifier, JwtVerifier, Principal
from bridge.connection import MAX_QUEUE, Connection, Connections, FrontStats
from bridge.errors import json_response
from bridge.flow import bounded_connection
from bridge.front_config import FrontConfig
from bridge.handshake import WS_DIALECTS, WS_PATHS, Admission, Gate, repeated_header
from bridge.history import History
from bridge.http_api import OPEN_TIMEOUT_S, HttpApi
from bridge.http_stream import streaming_connection
from bridge.hub import Hub
from bridge.logs import redact_library_loggers
from bridge.outbound import SharedBudget
from bridge.session import Session

__all__ = ["Front", "FrontConfig", "FrontStats"]

log = logging.getLogger(__name__)


class Front:
    """Accepts (handshake policy: bridge.handshake), hands each client off to its
    Connection (bridge.connection) and polices the counts; plain HTTP goes to bridge.http_api."""

    def __init__(
        self,
        config: FrontConfig,
        hub: Hub,
        verifier: JwtVerifier | None,
        database_check: Any = None,
        snapshot: Any = None,
        actions: Any = None,
        commands: Any = None,
        device_sessions: Any = None,
        pool: Any = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.hub = hub
        self.stats = FrontStats()
        # every token the front checks (handshake, auth message, REST) counts its failures
        if verifier is not None:
            verifier = CountingVerifier.wrapping(verifier, self.stats.auth_failures)
        self.verifier = verifier
        self.database_check = database_check
        self.snapshot = snapshot
        self.actions = actions
        self.commands = commands
        self.device_sessions = device_sessions
        self.pool = pool
        # what queries and replays may hold of the pool together: the rest stays free for
        # CSV exports (their own budget) and two interactive requests at least
        self.history = (
            History(pool, max(1, pool.get_max_size() - config.export_max_concurrent - 2))
            if pool is not None
            else None
        )
        self.budget = SharedBudget(config.queue_budget_bytes)
        self.sessions: set[Session] = set()
        self.api = HttpApi(
            config,
            self.stats,
            hub,
            self.sessions,
            verifier,
            database_check,
            pool,
            self.history,
            registry,
        )
        self.gate = Gate(config, verifier, self.stats)
        self.connections = Connections(self.stats, config.limits)
        # Keyed weakly: a handshake that never reaches the handler (cut short, timed out)
        # must not leave its entry behind (it did, keyed by id()).
        self._handshakes: weakref.WeakKeyDictionary[ServerConnection, Admission] = (
            weakref.WeakKeyDictionary()
        )
        self._server: Server | None = None
        self._closing = False
        self._ticker_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        redact_library_loggers()
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            # The handshake timeout moves into the connection class, which lets streamed
            # responses (CSV export) run longer than a handshake may.
            open_timeout=None,
            create_connection=bounded_connection(
                streaming_connection(
                    self.api.plan_stream, OPEN_TIMEOUT_S, f"telemetry-bridge/{__version__}"
                ),
                self.config.limits.frames_per_s,
                self.config.limits.frame_burst,
            ),
            max_size=self.config.limits.max_frame_bytes,
            compression="deflate" if self.config.compression else None,
            # keepalive is done by the one ticker loop instead of a task per connection
            ping_interval=None,
            ping_timeout=None,
            close_timeout=5,
            max_queue=MAX_QUEUE,
            server_header=f"telemetry-bridge/{__version__}",
            reuse_port=self.config.reuse_port,
            ssl=self.config.tls,
        )
        self._ticker_task = asyncio.create_task(self.connections.tick(), name="front-timers")
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        scheme = "wss" if self.config.tls is not None else "ws"
        log.info("front listening on %s://%s:%d/ws", scheme, self.config.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, close every client with 1001, release broker subscriptions."""
        if self._closing:
            return
        self._closing = True
        if self._ticker_task is not None:
            self._ticker_task.cancel()
        if self._server is not None:
            self._server.close(close_connections=True)  # 1001 going away
            await self._server.wait_closed()
        for session in list(self.sessions):
            await session.close()

    # -- handshake -----------------------------------------------------------------------------
    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        parts = urlsplit(request.path)
        path = parts.path.rstrip("/") or "/"
        repeated = repeated_header(request)
        if repeated is not None:
            return json_response(
                400, {"error": "bad_request", "message": f"the {repeated} header appears twice"}
            )
        greet, dialect = True, WS_DIALECTS.get(path, "valtronics")
        if path == "/" and request.headers.get("Upgrade", "").lower() == "websocket":
            # Clients that connect to the bare host (the Zhineng dialect) speak strict
            # request/response: no unsolicited greeting, or their replies would be off by one.
            path, greet, dialect = "/ws", False, "zhineng"
        if path not in WS_PATHS:
            if path.startswith("/api/v1/") and path != "/api/v1/events":
                return await self.api.rest(path, parts.query, request)
            return self.api.http(path, request)
        peer = str(connection.remote_address[0]) if connection.remote_address else "?"
        admission = self.gate.admit(peer, request, parts.query, WS_PATHS[path], greet, dialect)
        if isinstance(admission, Response):
            return admission
        self._handshakes[connection] = admission
        return None

    # -- one client ----------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        admission = self._handshakes.pop(ws, None) or Admission(None, None, True)
        principal = admission.principal
        conn = self.connections.accept(ws)
        client_id = f"c_{uuid.uuid4().hex[:12]}"
        session = Session(
            client_id=client_id,
            hub=self.hub,
            verifier=self.verifier,
            auth_required=self.config.auth_required,
            limits=self.config.limits,
            principal=principal,
            wake=conn.kick,
            snapshot=self.snapshot,
            on_principal=lambda p: self._authenticated(session, conn, p),
            actions=self.actions,
            commands=self.commands,
            device_sessions=self.device_sessions,
            history=self.history,
            budget=self.budget,
            wait_room=conn.wait_room,
        )
        conn.session = session
        session.default_channel = admission.channel  # type: ignore[attr-defined]
        if principal is None:
            conn.limit_unauthenticated()
        self.sessions.add(session)
        self.stats.current += 1
        self.stats.total += 1
        self.stats.peak = max(self.stats.peak, self.stats.current)
        self.stats.by_dialect[admission.dialect] += 1
        if principal is not None:
            self.gate.opened(principal)
            if admission.greet:
                session.reply(protocol.connected(client_id, self.config.limits.heartbeat_s))
        try:
            await conn.serve(admission.channel)
        finally:
            self.sessions.discard(session)
            self.stats.current -= 1
            self.stats.by_dialect[admission.dialect] -= 1
            if session.principal is not None:
                self.gate.closed(session.principal)

    def _authenticated(self, session: Session, conn: Connection, principal: Principal) -> None:
        self.gate.count_sub(session.principal, principal)  # may refuse (429): limits stay then
        conn.lift_unauthenticated_limits()
