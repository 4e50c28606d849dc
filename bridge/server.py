"""The WebSocket/HTTP front: ``websockets`` server, handshake policy, one writer per client.

HTTP endpoints share the port (``process_request``). A handshake is refused with HTTP 401 for
a bad token, 403 for a foreign Origin (bridge.origins), 429 for too many new connections from
one IP or for one subject, 503 past the total connection limit. CSV exports stream within their
own budget (bridge.exports): 429 past one per subject, 503 past the process's limit. Each
client gets a reader loop (this module) and one writer task draining its bounded queue;
fan-out never awaits a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
import uuid
import weakref
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from bridge import __version__, protocol
from bridge.auth import AuthError, JwtVerifier, Principal
from bridge.errors import json_response
from bridge.flow import bounded_connection, close_within
from bridge.handshake import WS_PATHS, client_ip, origin_ok, repeated_header
from bridge.history import History
from bridge.http_api import OPEN_TIMEOUT_S, HttpApi
from bridge.http_stream import streaming_connection
from bridge.hub import Hub
from bridge.limits import WindowCounter
from bridge.logs import redact_library_loggers
from bridge.outbound import SharedBudget
from bridge.session import FrontLimits, Session

log = logging.getLogger(__name__)
MAX_QUEUE = 16  # received messages websockets buffers per connection before it stops reading
TICK_S = 0.1  # interval flushes (the shortest frequency a subscription may ask for)
CHECK_SLICES = 10  # keepalive, auth and expiry deadlines, slow consumers: once a second


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


@dataclass(eq=False)
class _Conn:
    """Per-connection state of the front, kept small: an idle connection has no task of its
    own besides websockets' handler (no writer, no keepalive task; bench/connections.py)."""

    ws: ServerConnection
    started: float
    warned_at: float = 0.0
    closing: bool = False
    writer: asyncio.Task[None] | None = None
    last_ping: float = 0.0
    pong: asyncio.Task[None] | None = None  # the keepalive ping in flight
    room: asyncio.Future[None] | None = None  # the reader waiting for the client to read


@dataclass
class FrontStats:
    started: float = field(default_factory=time.monotonic)
    current: int = 0
    peak: int = 0
    total: int = 0
    sent: int = 0
    received: int = 0
    dropped: int = 0
    slow_consumer_closes: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    errors: int = 0  # error replies to closed connections (open ones count their own)
    batches: int = 0  # writes of queued frames to a transport, each of one or more frames
    # how long handling a client's message took (ms), the most recent ones (o1's stats)
    handling_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))


class Front:
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
    ) -> None:
        self.config = config
        self.hub = hub
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
        self.stats = FrontStats()
        self.budget = SharedBudget(config.queue_budget_bytes)
        self.sessions: set[Session] = set()
        self.api = HttpApi(
            config, self.stats, hub, self.sessions, verifier, database_check, pool, self.history
        )
        self._per_sub: Counter[str] = Counter()
        self._per_ip = WindowCounter(config.new_connections_per_ip_per_min, 60.0)
        # Keyed weakly: a handshake that never reaches the handler (cut short, timed out)
        # must not leave its entry behind (it did, keyed by id()).
        self._handshakes: weakref.WeakKeyDictionary[
            ServerConnection, tuple[Principal | None, str | None, bool]
        ] = weakref.WeakKeyDictionary()
        self._server: Server | None = None
        self._closing = False
        self._conns: dict[Session, _Conn] = {}
        self._closers: set[asyncio.Task[None]] = set()
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
        self._ticker_task = asyncio.create_task(self._ticker(), name="front-timers")
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
        greet = True
        if path == "/" and request.headers.get("Upgrade", "").lower() == "websocket":
            # Clients that connect to the bare host (the Zhineng dialect) speak strict
            # request/response: no unsolicited greeting, or their replies would be off by one.
            path, greet = "/ws", False
        if path not in WS_PATHS:
            if path.startswith("/api/v1/") and path != "/api/v1/events":
                return await self.api.rest(path, parts.query, request)
            return self.api.http(path, request)
        if not origin_ok(request, self.config):
            self.stats.refused["origin"] += 1
            return json_response(403, {"error": "forbidden", "message": "origin not allowed"})
        if self.stats.current >= self.config.max_connections:
            self.stats.refused["capacity"] += 1
            return json_response(
                503, {"error": "unavailable", "message": "server at connection capacity"}
            )
        peer = str(connection.remote_address[0]) if connection.remote_address else "?"
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
        token = None
        auth = request.headers.get("Authorization")
        if auth and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        elif "token" in (query := parse_qs(parts.query)):
            token = query["token"][0]
        principal = None
        if token is not None:
            if self.verifier is None:
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
        self._handshakes[connection] = (principal, WS_PATHS[path], greet)
        return None

    # -- one client ----------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        principal, default_channel, greet = self._handshakes.pop(ws, (None, None, True))
        conn = _Conn(ws, time.monotonic())
        client_id = f"c_{uuid.uuid4().hex[:12]}"
        session = Session(
            client_id=client_id,
            hub=self.hub,
            verifier=self.verifier,
            auth_required=self.config.auth_required,
            limits=self.config.limits,
            principal=principal,
            wake=lambda: self._kick(session, conn),
            send_now=lambda frame: self._send_now(session, conn, frame),
            snapshot=self.snapshot,
            on_principal=lambda p: self._authenticated(session, conn, p),
            actions=self.actions,
            commands=self.commands,
            device_sessions=self.device_sessions,
            history=self.history,
            budget=self.budget,
            wait_room=lambda: self._wait_room(session, conn),
        )
        session.default_channel = default_channel  # type: ignore[attr-defined]
        if principal is None:
            _limit_unauthenticated(ws, self.config.limits)
        self.sessions.add(session)
        self.stats.current += 1
        self.stats.total += 1
        self.stats.peak = max(self.stats.peak, self.stats.current)
        if principal is not None:
            self._per_sub[principal.sub] += 1
            if greet:
                session.reply(protocol.connected(client_id, self.config.limits.heartbeat_s))
        self._conns[session] = conn
        try:
            async for frame in ws:
                if default_channel and isinstance(frame, str | bytes):
                    frame = _with_default_channel(frame, default_channel)
                began = time.perf_counter()
                await session.handle_frame(frame)
                self.stats.handling_ms.append((time.perf_counter() - began) * 1000)
                # The next message is read only once this client has taken enough of what
                # is queued for it: a client that sends and never reads stops being read.
                if session.close_request or not await session.room():
                    await asyncio.sleep(0)  # let the writer flush the reply first
                    break
        except ConnectionClosed:
            pass
        finally:
            if session.close_request:
                self._kick(session, conn)
                if conn.writer is not None:
                    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(asyncio.shield(conn.writer), 1)
            self._conns.pop(session, None)
            if conn.room is not None and not conn.room.done():
                conn.room.cancel()
            if conn.writer is not None and not conn.writer.done():
                conn.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await conn.writer
            self.stats.received += session.received
            self.stats.errors += session.errors
            self.stats.dropped += session.queue.dropped
            await session.close()
            # websockets closes the connection after this handler returns, and would wait
            # forever for a peer that does not read: close here, abort past the deadline
            code, reason = session.close_request or (1000, "")
            await close_within(ws, code, reason)
            self.sessions.discard(session)
            self.stats.current -= 1
            if session.principal is not None:
                self._per_sub[session.principal.sub] -= 1
                if self._per_sub[session.principal.sub] <= 0:
                    del self._per_sub[session.principal.sub]

    def _authenticated(self, session: Session, conn: _Conn, principal: Principal) -> None:
        self._count_sub(session, principal)  # may refuse (429): the limits stay then
        _lift_unauthenticated_limits(conn.ws, self.config.limits)

    def _count_sub(self, session: Session, principal: Principal) -> None:
        """Admit a connection that authenticates by message, under the same per-subject limit
        as the handshake; raises ClientError 429 to refuse it.

        Called by the session before it takes ``principal``. A session that already has one
        is refreshing its token: the subject is the same (the session refuses another) and was
        counted when it first authenticated, here or at the handshake. Every session with a
        principal is thus counted exactly once, and ``_handle`` uncounts it on close.
        """
        if session.principal is not None:
            return
        if self._per_sub[principal.sub] >= self.config.max_connections_per_sub:
            self.stats.refused["per_sub"] += 1
            raise protocol.ClientError(429, "rate_limit_exceeded", "too many connections")
        self._per_sub[principal.sub] += 1

    def _kick(self, session: Session, conn: _Conn) -> None:
        """Something is queued: make sure a writer runs. The writer lives only while there
        is something to send, so idle connections hold no task."""
        if conn.writer is not None and not conn.writer.done():
            return  # the running writer picks it up
        ws = conn.ws
        if not session.batch_mode and not session.close_request and not ws.paused:
            # Fast path, as websockets.broadcast() intends: the transport takes the frames
            # now, no task is created and no task switch delays them. A writer task is
            # only needed to wait for the transport (flow control) or to batch.
            frames = session.queue.pop(100)
            for frame in frames:
                broadcast((ws,), frame, text=True)
            self.stats.sent += len(frames)
            self.stats.batches += 1 if frames else 0
            self._notify_room(session, conn)
            if not len(session.queue) and not ws.paused:
                return
        conn.writer = asyncio.create_task(self._write(session, conn))

    def _notify_room(self, session: Session, conn: _Conn) -> None:
        if conn.room is not None and not conn.room.done() and session.queue.room():
            conn.room.set_result(None)

    async def _wait_room(self, session: Session, conn: _Conn) -> bool:
        """Until the client has read enough of its queue (True), or has not within
        ``max_behind_s`` (False: it is closed as a slow consumer)."""
        if session.queue.room():
            return True
        if conn.closing or conn.ws.state is not State.OPEN:
            return False
        if conn.room is None or conn.room.done():
            conn.room = asyncio.get_running_loop().create_future()
        lost = asyncio.shield(conn.ws.connection_lost_waiter)
        done, _ = await asyncio.wait(
            (conn.room, lost),
            timeout=self.config.limits.max_behind_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if conn.room in done and not conn.room.cancelled():
            return True
        if not done:
            self.stats.slow_consumer_closes += 1
            self._close_later(conn, 4008, "slow consumer")
        return False

    def _send_now(self, session: Session, conn: _Conn, frame: bytes) -> bool:
        """A live frame for a client with nothing queued: hand it to the transport now,
        skipping the queue, unless a writer is waiting on flow control or batching."""
        if (conn.writer is not None and not conn.writer.done()) or conn.ws.paused:
            return False
        if session.batch_mode or session.close_request:
            return False
        broadcast((conn.ws,), frame, text=True)
        self.stats.sent += 1
        self.stats.batches += 1
        return True

    async def _write(self, session: Session, conn: _Conn) -> None:
        ws, queue = conn.ws, session.queue
        try:
            while frames := queue.pop(100):
                messages = len(frames)
                if session.batch_mode and len(frames) > 1:
                    # clients that asked for "batch": true get one envelope per writer pass
                    frames = [_batch_frame(frames)]
                # broadcast() writes synchronously: no awaited send per frame (the front's
                # largest cost at 1,000 clients, bench/fanout.py); drain() then applies the
                # transport's flow control once per pass.
                for frame in frames:
                    broadcast((ws,), frame, text=True)
                self._notify_room(session, conn)
                await ws.drain()
                self.stats.sent += messages
                self.stats.batches += 1
            # no await between the last (empty) pop and here: a frame queued meanwhile
            # would have found this task still running and been picked up by the loop
            if session.close_request:
                code, reason = session.close_request
                await close_within(ws, code, reason)
        except ConnectionClosed:
            pass

    async def _ticker(self) -> None:
        """One loop for every connection's timers (auth deadline, token expiry, interval
        flushes, slow-consumer policing): a task per connection waking ten times a second
        cost more CPU than the fan-out itself with 1,000 clients (bench/fanout.py).

        Interval flushes need the 100 ms tick; the other checks are second-grained, so each
        tick checks a tenth of the connections. One pass over 1,000 connections held the
        event loop for ~4 ms, ten times a second: deliveries that arrived meanwhile waited.
        """
        pending: list[tuple[Session, _Conn]] = []
        per_tick = 1
        while True:
            await asyncio.sleep(TICK_S)
            now, wall = time.monotonic(), time.time()
            if not pending:
                pending = list(self._conns.items())
                pending.reverse()  # popped from the end: oldest connections first
                per_tick = -(-len(pending) // CHECK_SLICES)
            for _ in range(min(per_tick, len(pending))):
                session, conn = pending.pop()
                if not conn.closing and session in self._conns:
                    self._check(session, conn, now, wall)
            for session in self._conns:
                if session.has_intervals:
                    session.flush_intervals(now)

    def _check(self, session: Session, conn: _Conn, now: float, wall: float) -> None:
        heartbeat = self.config.limits.heartbeat_s
        if (conn.pong is None or conn.pong.done()) and now - conn.last_ping >= heartbeat:
            conn.last_ping = now
            conn.pong = asyncio.create_task(self._ping(conn, heartbeat))
        principal = session.principal
        if principal is None:
            if now - conn.started >= self.config.limits.auth_timeout_s:
                self._close_later(conn, 1008, "authentication timeout")
            return
        if principal.expires_at <= wall:
            session.reply(
                protocol.message(
                    "error", code=401, error="token_expired", message="token has expired"
                )
            )
            self._close_later(conn, 4001, "token_expired", delay=0.05)
            return
        queue = session.queue
        if queue.too_far_behind(now):
            self.stats.slow_consumer_closes += 1
            self._close_later(conn, 4008, "slow consumer")
            return
        if now - conn.warned_at >= 1.0:
            dropped = queue.take_unreported_drops()
            if dropped:
                conn.warned_at = now
                queue.put(
                    protocol.encode(
                        protocol.message("warning", error="slow_consumer", dropped=dropped)
                    ),
                    now,
                    force=True,
                    urgent=True,
                )
                session.reply_wake()

    async def _ping(self, conn: _Conn, within_s: float) -> None:
        """Keepalive: a client that does not answer a ping within the heartbeat is gone.
        Sending the ping counts too: it waits for the transport, which a client that does not
        read never drains."""
        try:
            async with asyncio.timeout(within_s):
                pong = await conn.ws.ping()
                await pong
        except TimeoutError:
            if not conn.closing:
                self._close_later(conn, 1011, "keepalive ping timeout")
        except ConnectionClosed:
            pass

    def _close_later(self, conn: _Conn, code: int, reason: str, delay: float = 0.0) -> None:
        conn.closing = True

        async def close() -> None:
            if delay:
                await asyncio.sleep(delay)  # let the writer send the reply first
            await close_within(conn.ws, code, reason)

        task = asyncio.create_task(close())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)


def _limit_unauthenticated(ws: ServerConnection, limits: FrontLimits) -> None:
    """Before authentication a connection may hold only a few KiB: small frames, and one
    received message buffered at a time (websockets queues up to 16 of ``max_size`` each)."""
    ws.protocol.max_message_size = limits.preauth_frame_bytes
    ws.recv_messages.high, ws.recv_messages.low = 1, 0


def _lift_unauthenticated_limits(ws: ServerConnection, limits: FrontLimits) -> None:
    ws.protocol.max_message_size = limits.max_frame_bytes
    ws.recv_messages.high, ws.recv_messages.low = MAX_QUEUE, MAX_QUEUE // 4


def _batch_frame(frames: list[bytes]) -> bytes:
    stamp = protocol.now_iso().encode()
    return b'{"type":"batch","messages":[' + b",".join(frames) + b'],"timestamp":"' + stamp + b'"}'


def _with_default_channel(frame: str | bytes, channel: str) -> str | bytes:
    """On /ws/{channel}, a subscribe that names no channel gets that one."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return frame
    if isinstance(msg, dict) and msg.get("type") == "subscribe" and "channel" not in msg:
        if "topics" not in msg and "events" not in msg:
            msg["channel"] = channel
            return orjson.dumps(msg)
    return frame
