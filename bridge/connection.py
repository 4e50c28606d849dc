"""One client's connection, from the accepted handshake to the close, and the front's counters.

:class:`Connection` is the one owner of a client's lifetime: the reader loop feeding its
session, the writer draining the session's bounded queue (fan-out never awaits a socket),
keepalive pings, the auth, expiry and slow-consumer checks, and the close. :class:`Connections`
holds one front's open connections and the one ticker loop that runs all their timers.
:class:`FrontStats` (bridge/front_metrics.py) is what the front and its connections count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bridge import protocol
from bridge.errors import ws_error
from bridge.flow import close_within
from bridge.front_metrics import FrontStats
from bridge.logs import CONNECTION
from bridge.protocol import ClientError
from bridge.session import FrontLimits, Session
from bridge.ws_frames import batch_frame, text_frames

__all__ = ["MAX_QUEUE", "Connection", "Connections", "FrontStats"]

log = logging.getLogger(__name__)

MAX_QUEUE = 16  # received messages websockets buffers per connection before it stops reading
TICK_S = 0.1  # interval flushes (the shortest frequency a subscription may ask for)
CHECK_SLICES = 10  # keepalive, auth and expiry deadlines, slow consumers: once a second
WRITE_FRAMES = 100  # frames taken from a queue for one write (more: the writer task drains)


class Connections:
    """The open connections of one front, and the one loop running all their timers."""

    def __init__(self, stats: FrontStats, limits: FrontLimits) -> None:
        self.stats = stats
        self.limits = limits
        self.live: dict[Session, Connection] = {}
        self.closers: set[asyncio.Task[None]] = set()
        # connections with frames queued since the last flush, written by one callback
        self._pending: list[Connection] = []
        self._flush_handle: asyncio.Handle | None = None

    def accept(self, ws: ServerConnection) -> Connection:
        return Connection(ws, self, time.monotonic())

    # -- coalesced writes ------------------------------------------------------------------
    def schedule(self, conn: Connection) -> None:
        """``conn`` has frames queued: write them once the current burst of work is done.

        The hub hands over a broker read one message at a time, each to every listener, and
        a client gets a frame per message it matches. The first frame queued for any client
        schedules one flush (``call_soon``: after everything already runnable, i.e. the rest
        of the burst, whoever drives it), and the flush gives each client everything it got
        in one write instead of a write per frame.
        """
        self._pending.append(conn)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        pending, self._pending = self._pending, []
        for conn in pending:
            try:
                conn.flush()
            except Exception:  # one connection's failure must not leave the others unwritten
                conn.scheduled = False
                # this callback writes for many connections: name the one that failed
                log.exception("writing to a client failed", extra={"connection": conn.log_id})

    async def tick(self) -> None:
        """One loop for every connection's timers (auth deadline, token expiry, interval
        flushes, slow-consumer policing): a task per connection waking ten times a second
        cost more CPU than the fan-out itself with 1,000 clients (bench/fanout.py).

        Interval flushes need the 100 ms tick; the other checks are second-grained, so each
        tick checks a tenth of the connections. One pass over 1,000 connections held the
        event loop for ~4 ms, ten times a second: deliveries that arrived meanwhile waited.
        """
        pending: list[tuple[Session, Connection]] = []
        per_tick = 1
        while True:
            await asyncio.sleep(TICK_S)
            now, wall = time.monotonic(), time.time()
            if not pending:
                pending = list(self.live.items())
                pending.reverse()  # popped from the end: oldest connections first
                per_tick = -(-len(pending) // CHECK_SLICES)
            for _ in range(min(per_tick, len(pending))):
                session, conn = pending.pop()
                if not conn.closing and session in self.live:
                    conn.check(now, wall)
            for session in self.live:
                if session.has_intervals:
                    session.flush_intervals(now)


class Connection:
    """Per-connection state of the front, kept small: an idle connection has no task of its
    own besides websockets' handler (no writer, no keepalive task; bench/connections.py)."""

    __slots__ = (
        "closing",
        "last_ping",
        "log_id",
        "owner",
        "pong",
        "room",
        "scheduled",
        "session",
        "started",
        "warned_at",
        "writer",
        "ws",
    )

    session: Session  # set by the front once the session is built around this connection

    def __init__(self, ws: ServerConnection, owner: Connections, started: float) -> None:
        self.ws = ws
        self.owner = owner
        self.started = started
        self.warned_at = 0.0
        self.closing = False
        self.writer: asyncio.Task[None] | None = None
        self.last_ping = 0.0
        self.pong: asyncio.Task[None] | None = None  # the keepalive ping in flight
        self.room: asyncio.Future[None] | None = None  # the reader waiting for the client
        self.scheduled = False  # waiting for the owner's next flush
        self.log_id: str | None = None  # the session's client_id, named in log lines

    # -- reading -----------------------------------------------------------------------------
    async def serve(self, default_channel: str | None) -> None:
        """Read the client's messages into its session until either side closes, then take
        the connection down: writer, session (its broker subscriptions), socket."""
        session, ws, stats = self.session, self.ws, self.owner.stats
        # websockets runs this handler in a task of its own per connection: what is logged in
        # it, and in the tasks it starts, names the connection (bridge/logs.py)
        self.log_id = session.client_id
        CONNECTION.set(self.log_id)
        self.owner.live[session] = self
        try:
            async for frame in ws:
                began = time.perf_counter()
                type_ = await session.handle_frame(frame, default_channel or None)
                stats.handled(type_, time.perf_counter() - began)
                # The next message is read only once this client has taken enough of what
                # is queued for it: a client that sends and never reads stops being read.
                if session.close_request or not await session.room():
                    await asyncio.sleep(0)  # let the writer flush the reply first
                    break
        except ConnectionClosed:
            pass
        finally:
            if session.close_request:
                self.kick()
                if self.writer is not None:
                    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(asyncio.shield(self.writer), 1)
            self.owner.live.pop(session, None)
            if self.room is not None and not self.room.done():
                self.room.cancel()
            if self.writer is not None and not self.writer.done():
                self.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.writer
            stats.retire(session)
            await session.close()
            # websockets closes the connection after this handler returns, and would wait
            # forever for a peer that does not read: close here, abort past the deadline
            code, reason = session.close_request or (1000, "")
            await close_within(ws, code, reason)

    def limit_unauthenticated(self) -> None:
        """Before authentication a connection may hold only a few KiB: small frames, and one
        received message buffered at a time (websockets queues up to 16 of ``max_size`` each)."""
        self.ws.protocol.max_message_size = self.owner.limits.preauth_frame_bytes
        self.ws.recv_messages.high, self.ws.recv_messages.low = 1, 0

    def lift_unauthenticated_limits(self) -> None:
        self.ws.protocol.max_message_size = self.owner.limits.max_frame_bytes
        self.ws.recv_messages.high, self.ws.recv_messages.low = MAX_QUEUE, MAX_QUEUE // 4

    # -- writing -----------------------------------------------------------------------------
    def kick(self) -> None:
        """Something is queued: have it written. Normally nothing is written here: the
        owner's next flush writes everything queued for this client meanwhile at once (one
        write per client per burst, not per frame). The writer task lives only while there
        is something to wait for, so idle connections hold no task.

        But one broker read (an ingest's backlog after a restart) can bring a client
        hundreds of frames before any flush runs. Once enough wait to make its queue
        conflate, they are written now if the transport takes them: else a client reading
        as fast as it can would get only the last value per (device, metric) of the burst.
        Frames pile up past that only when the client really is behind."""
        queue = self.session.queue
        if len(queue) >= queue.conflate_from and self._writable():
            self._write_now()
            if not len(queue):
                return
        if self.scheduled or (self.writer is not None and not self.writer.done()):
            return  # the coming flush, or the running writer, picks it up
        self.scheduled = True
        self.owner.schedule(self)

    def flush(self) -> None:
        """Write what is queued, now if the transport takes it, else through a writer task
        (flow control, ``batch`` envelopes, a requested close)."""
        self.scheduled = False
        if self.writer is not None and not self.writer.done():
            return
        if not self.session.batch_mode and self._writable():
            self._write_now()
            if not len(self.session.queue) and not self.ws.paused:
                return
        self.writer = asyncio.create_task(self._write())

    def _writable(self) -> bool:
        """Whether frames can be written without waiting: the transport is not pushing back
        (a paused one means the client's socket is full) and no close is pending."""
        ws = self.ws
        return (
            not self.session.close_request
            and not ws.paused
            and ws.protocol.state is State.OPEN
            and not ws.transport.is_closing()
        )

    def _write_now(self) -> None:
        """Write what is queued, in the writer's passes, until none is left or the transport
        pushes back. This runs inside the broker read: a failure is logged, not raised."""
        session, queue, stats = self.session, self.session.queue, self.owner.stats
        try:
            while not self.ws.paused and (frames := queue.pop(WRITE_FRAMES)):
                messages = len(frames)
                if session.batch_mode and messages > 1:
                    frames = [batch_frame(frames, protocol.now_iso())]
                self._write_frames(frames)
                stats.sent += messages
                stats.batches += 1
            if self.ws.paused:
                queue.carried = True  # the client has not taken its last write: as _write
            self._notify_room()
        except Exception:
            log.exception("writing to a client failed", extra={"connection": self.log_id})

    def _write_frames(self, frames: list[bytes]) -> None:
        """``frames`` (UTF-8 JSON) as text frames, in one write to the transport.

        Skipped, as ``websockets.broadcast`` skips, on a connection that is no longer open
        (the closing handshake has begun: no data frame may follow it)."""
        ws = self.ws
        protocol = ws.protocol
        if protocol.state is not State.OPEN or ws.transport.is_closing():
            return
        if protocol.writes:
            ws.send_data()  # what websockets has framed comes first (never seen: it writes at once)
        if protocol.extensions:
            # per-message deflate: each client's frames go through its own compressor
            for frame in frames:
                protocol.send_text(frame)
            data = b"".join(protocol.data_to_send())
        else:
            data = text_frames(frames)
        try:
            ws.transport.write(data)
        except (OSError, RuntimeError):  # the socket went meanwhile; connection_lost follows
            pass

    def _notify_room(self) -> None:
        if self.room is not None and not self.room.done() and self.session.queue.room():
            self.room.set_result(None)

    async def wait_room(self) -> bool:
        """Until the client has read enough of its queue (True), or has not within
        ``max_behind_s`` (False: it is closed as a slow consumer)."""
        if self.session.queue.room():
            return True
        if self.closing or self.ws.state is not State.OPEN:
            return False
        # Several may wait at once (the reader, a batch, the replays after a broker gap) and
        # share the future; by the time this one wakes, another may have put a new one in
        # ``self.room`` and filled the queue again: what counts is the one awaited here.
        room = self.room
        if room is None or room.done():
            room = self.room = asyncio.get_running_loop().create_future()
        lost = asyncio.shield(self.ws.connection_lost_waiter)
        done, _ = await asyncio.wait(
            (room, lost),
            timeout=self.owner.limits.max_behind_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if room in done and not room.cancelled():
            return True
        if not done:
            self.owner.stats.slow_consumer_closes += 1
            self.close_later(4008, "slow consumer")
        return False

    async def _write(self) -> None:
        session, ws, stats = self.session, self.ws, self.owner.stats
        # started by whichever task's flush came first, perhaps another connection's
        CONNECTION.set(self.log_id)
        queue = session.queue
        try:
            while frames := queue.pop(WRITE_FRAMES):
                messages = len(frames)
                if session.batch_mode and len(frames) > 1:
                    # clients that asked for "batch": true get one envelope per writer pass
                    frames = [batch_frame(frames, protocol.now_iso())]
                # one synchronous write per pass (no awaited send per frame); drain() then
                # applies the transport's flow control once per pass
                self._write_frames(frames)
                self._notify_room()
                if ws.paused:
                    # what it was sent last is not taken yet: no share of a spent budget
                    queue.carried = True
                await ws.drain()
                stats.sent += messages
                stats.batches += 1
            # no await between the last (empty) pop and here: a frame queued meanwhile
            # would have found this task still running and been picked up by the loop
            if session.close_request:
                code, reason = session.close_request
                await close_within(ws, code, reason)
        except ConnectionClosed:
            pass

    # -- timers (run by Connections.tick) ------------------------------------------------------
    def check(self, now: float, wall: float) -> None:
        session, limits = self.session, self.owner.limits
        heartbeat = limits.heartbeat_s
        if (self.pong is None or self.pong.done()) and now - self.last_ping >= heartbeat:
            self.last_ping = now
            self.pong = asyncio.create_task(self._ping(heartbeat))
        principal = session.principal
        if principal is None:
            if now - self.started >= limits.auth_timeout_s:
                self.close_later(1008, "authentication timeout")
            return
        if principal.expires_at <= wall:
            session.reply(ws_error(ClientError(401, "token_expired", "token has expired")))
            self.close_later(4001, "token_expired", delay=0.05)
            return
        queue = session.queue
        if queue.too_far_behind(now):
            self.owner.stats.slow_consumer_closes += 1
            self.close_later(4008, "slow consumer")
            return
        if now - self.warned_at >= 1.0:
            dropped, conflated = queue.take_unreported_drops(), queue.take_unreported_conflated()
            if dropped or conflated:
                self.warned_at = now
                warning = protocol.message(
                    "warning", error="slow_consumer", dropped=dropped, conflated=conflated
                )
                queue.put(
                    protocol.encode(warning),
                    now,
                    force=True,
                    urgent=True,
                )
                session.reply_wake()

    async def _ping(self, within_s: float) -> None:
        """Keepalive: a client that does not answer a ping within the heartbeat is gone.
        Sending the ping counts too: it waits for the transport, which a client that does not
        read never drains."""
        try:
            async with asyncio.timeout(within_s):
                pong = await self.ws.ping()
                await pong
        except TimeoutError:
            if not self.closing:
                self.close_later(1011, "keepalive ping timeout")
        except ConnectionClosed:
            pass

    def close_later(self, code: int, reason: str, delay: float = 0.0) -> None:
        self.closing = True

        async def close() -> None:
            if delay:
                await asyncio.sleep(delay)  # let the writer send the reply first
            await close_within(self.ws, code, reason)

        task = asyncio.create_task(close())
        self.owner.closers.add(task)
        task.add_done_callback(self.owner.closers.discard)
