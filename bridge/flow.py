"""Transport-level bounds of one WebSocket connection: what a client that floods or never
reads can make the server hold.

``websockets`` keeps reading while a peer does not read: every ping it receives is answered
with a pong written to the transport, so a client that sends pings and never reads grows the
server's write buffer without limit, and ``close()`` then waits in ``drain()`` forever. Here:

- reading pauses while writing is paused (the peer is not reading): no pong, no reply, no
  work is produced for a client that is not taking what it already has;
- incoming frames of every kind (data, ping, pong) are counted against a budget; past it,
  reading pauses until the budget refills, and a client far ahead of it is failed with 1008;
- a large read is parsed a slice at a time, so one flooding client cannot hold the event
  loop for the time it takes to parse (and answer) a quarter megabyte of tiny frames;
- :func:`close_within` closes with a code and, when the closing handshake cannot complete
  in time (the peer does not read), aborts the transport so the socket and its buffers go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

log = logging.getLogger(__name__)

CLOSE_DEADLINE_S = 2.0  # for the closing handshake before the transport is aborted
MAX_FRAME_DEBT_S = 5.0  # a client this far ahead of its frame budget is failed
READ_SLICE = 8192  # bytes parsed before other connections get the event loop again


@contextlib.contextmanager
def _quiet() -> Any:
    with contextlib.suppress(ConnectionClosed, OSError, RuntimeError):
        yield


class FrameBudget:
    """Frames a connection may send: ``rate`` per second, ``burst`` saved up. Unlike a
    token bucket that refuses, it goes into debt, so the wait it reports grows with every
    frame past the budget (a flood is seen as a flood, not as one frame too many)."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def take(self, now: float) -> float:
        """Spend one frame; 0.0 when within the budget, else the seconds until it is paid."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


def bounded_connection(
    base: type[ServerConnection], frames_per_s: float, frame_burst: float
) -> type[ServerConnection]:
    """``base`` with reading tied to writing, reads fed in slices, and a frame budget."""

    class BoundedConnection(base):  # type: ignore[valid-type,misc]
        _read_holds: frozenset[str]
        _frames: FrameBudget
        _resume_handle: asyncio.TimerHandle | None
        _backlog: bytearray

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            # immutable: the empty one is shared by every connection that holds nothing
            self._read_holds = frozenset()
            self._frames = FrameBudget(frames_per_s, frame_burst)
            self._resume_handle = None
            self._backlog = bytearray()
            # websockets pauses reading itself when its queue of received messages is
            # full; route that through the same holds so one reason cannot lift another's.
            self.recv_messages.pause = lambda: self.hold_reading("queue")
            self.recv_messages.resume = lambda: self.release_reading("queue")

        # -- reading holds --------------------------------------------------------------------
        def hold_reading(self, reason: str) -> None:
            if not self._read_holds and not self.transport.is_closing():
                self.transport.pause_reading()
            self._read_holds = self._read_holds | {reason}

        def release_reading(self, reason: str) -> None:
            if reason not in self._read_holds:
                return
            self._read_holds = self._read_holds - {reason}
            if not self._read_holds and not self.transport.is_closing():
                self.transport.resume_reading()

        # -- writing paused: stop reading ------------------------------------------------------
        def pause_writing(self) -> None:
            super().pause_writing()
            self.hold_reading("write")

        def resume_writing(self) -> None:
            super().resume_writing()
            self.release_reading("write")

        # -- reads in slices --------------------------------------------------------------------
        def data_received(self, data: bytes) -> None:
            # One read can hold 256 KiB: 40,000 ping frames, each parsed and answered before
            # anything else runs (seconds of stalled event loop for every other client). Feed
            # the parser a slice at a time and let the loop run between slices; the frame
            # budget can then fail a flood after its first slices.
            if self._backlog:
                self._backlog += data
                return
            if len(data) <= READ_SLICE:
                super().data_received(data)
                return
            self._backlog += data
            self.hold_reading("slice")
            self._feed_slice()

        def _feed_slice(self) -> None:
            chunk = bytes(self._backlog[:READ_SLICE])
            del self._backlog[:READ_SLICE]
            if self.transport.is_closing():
                self._backlog.clear()
            else:
                super().data_received(chunk)
            if self._backlog and self.protocol.state in (State.CONNECTING, State.OPEN):
                self.loop.call_soon(self._feed_slice)
                return
            self._backlog.clear()  # failed or closing: the rest is not read
            self.release_reading("slice")

        # -- frame budget ---------------------------------------------------------------------
        def process_event(self, event: Any) -> None:
            if self.protocol.state is State.OPEN:
                wait = self._frames.take(self.loop.time())
                if wait > MAX_FRAME_DEBT_S:
                    self._fail_flood()
                    return
                if wait and "rate" not in self._read_holds:
                    self.hold_reading("rate")
                    self._resume_handle = self.loop.call_later(wait, self.release_reading, "rate")
            super().process_event(event)

        def _fail_flood(self) -> None:
            if self.protocol.state is not State.OPEN:
                return
            log.info("closing a connection that sent frames far past its budget")
            with _quiet():
                self.protocol.fail(1008, "too many frames")
                self.send_data()
            # the close frame may never be read: the socket goes regardless
            self.loop.call_later(CLOSE_DEADLINE_S, self.transport.abort)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._resume_handle is not None:
                self._resume_handle.cancel()
            self._backlog.clear()
            super().connection_lost(exc)

    return BoundedConnection


async def close_within(
    ws: ServerConnection, code: int, reason: str, deadline_s: float = CLOSE_DEADLINE_S
) -> None:
    """Close with ``code``; abort the transport when the handshake has not completed within
    ``deadline_s`` (a peer that does not read never lets ``close()`` return)."""
    try:
        async with asyncio.timeout(deadline_s):
            await ws.close(code, reason)
    except TimeoutError:
        ws.transport.abort()
    except (ConnectionClosed, OSError):
        pass
