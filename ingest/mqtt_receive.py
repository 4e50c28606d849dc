"""The receiving half of ingest/mqtt.py's AsyncMqtt: from a connection's bytes to the handler.

:class:`Link` is one TCP (or TLS) connection: each read goes through the decoder at once and
its packets to :class:`Receiver`, which hands the messages over a loop turn's budget at a time,
holds them while the caller has paused it, and stops reading the socket while any wait (TCP
flow control then holds the broker back). Answers to our own requests are matched to their
waiters as they arrive.

This is the hot path of the ingest and the front. It is kept apart from the connection's
lifecycle and requests (ingest/mqtt.py) so each can be read on its own; ``AsyncMqtt`` is the
one class that uses it, and it sets up the attributes declared here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import cast

from ingest import mqtt_packets as mp
from ingest.mqtt_endpoint import MqttEndpoint
from ingest.mqtt_types import (
    ConnAck,
    Disconnect,
    Message,
    Packet,
    ProtocolError,
    PubAck,
    SubAck,
    UnsubAck,
)

__all__ = ["Link", "MessageHandler", "Receiver"]

# logged as the client: one component to an operator, however the source is split
log = logging.getLogger("ingest.mqtt")

MessageHandler = Callable[[Message], None]
_TURN_BYTES = 64 * 1024  # payload bytes handed over per loop turn (_deliver)


class Link(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes to the decoder, packets to the client."""

    def __init__(self, owner: Receiver) -> None:
        self.owner = owner
        self.decoder = mp.Decoder(v5=owner.endpoint.protocol == "5")
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[ConnAck] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.decoder.feed(data)
        except ProtocolError as exc:
            log.warning(
                "malformed packet from MQTT broker %s: %s", self.owner.endpoint.redacted(), exc
            )
            if self.transport is not None:
                self.transport.abort()
            return
        self.owner._received(self, packets)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_exception(ConnectionError(exc or "closed before CONNACK"))
        self.closed.set()
        self.owner._lost(self, exc)


class Receiver:
    """Received messages to the handler, with flow control; answers to their waiters."""

    endpoint: MqttEndpoint
    _loop: asyncio.AbstractEventLoop
    _link: Link | None  # the current connection; packets of any other are dropped
    _stopping: bool
    _last_heard: float  # loop time anything was last read (the keepalive check)
    _on_message: MessageHandler
    _auto_ack: bool  # PUBACK each QoS 1 message as it is handed over
    # called after the messages of one read were handed over (the front flushes then)
    _on_burst_end: Callable[[], None] | None
    _pending: dict[int, asyncio.Future[Packet] | None]  # packet id -> waiter
    _paused: bool  # by the caller (pause_reading)
    # the transport's reading: paused by the caller, or while messages already read wait for
    # the next loop turn
    _reading_paused: bool
    _backlog: list[Message]  # read, not handed over yet
    _more_scheduled: bool  # a _deliver_backlog is due on the next loop turn
    # AsyncMqtt's: queue bytes for this loop turn's write; forget a connection that closed
    _send: Callable[[bytes], None]
    _lost: Callable[[Link, Exception | None], None]

    def pause_reading(self) -> None:
        """Stop reading the socket: TCP flow control then holds the broker back.

        Our own bound on buffered messages, independent of whether the broker honours the
        Receive Maximum we asked for (mosquitto 2.0.11 was seen exceeding it while draining a
        large queued session). Messages already read stay here until ``resume_reading``.
        """
        self._paused = True
        self._read_less()

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        self._last_heard = self._loop.time()  # nothing was read while paused
        if self._backlog:
            # not from inside the caller's own stack: the handler may be what called us
            self._loop.call_soon(self._deliver_backlog, self._link)
        else:
            self._read_more()

    @property
    def paused(self) -> bool:
        return self._paused

    def _reset_reading(self) -> None:
        """A new connection, or none: nothing held back, nothing paused."""
        self._backlog = []
        self._paused = self._reading_paused = False

    # -- on the loop, from Link ------------------------------------------------------------
    def _received(self, link: Link, packets: list[Packet]) -> None:
        if link is not self._link or self._stopping:
            return  # a connection given up already, or being closed
        self._last_heard = self._loop.time()
        if self._backlog or self._paused:
            self._hold(link, packets)  # behind the messages held already: order is kept
        else:
            self._deliver(link, packets)

    def _deliver(self, link: Link, packets: Sequence[Packet]) -> None:
        """Hand the messages over, up to a turn's budget of payload bytes. One read can hold
        256 KiB of messages; handing all of them over at once would starve the loop's other
        tasks (the front's WebSocket writers) for as long, so the rest waits a loop turn, and
        the socket is not read meanwhile."""
        on_message = self._on_message
        acks: list[bytes] | None = [] if self._auto_ack else None
        budget = _TURN_BYTES
        handed = False
        for i, packet in enumerate(packets):
            if type(packet) is Message:
                if self._paused or budget < 0:
                    self._hold(link, packets[i:])
                    break
                on_message(packet)
                handed = True
                budget -= len(packet.payload)
                if acks is not None and packet.qos == 1:
                    acks.append(mp.puback(packet.mid))
            else:
                self._control(link, packet)
        if acks:
            self._send(b"".join(acks))
        if handed and self._on_burst_end is not None:
            self._on_burst_end()

    def _hold(self, link: Link, packets: Sequence[Packet]) -> None:
        """Keep the messages for later (in order); answers to our own requests are handled
        now. Unless the caller paused us, the rest is handed over on the next loop turn."""
        for packet in packets:
            if isinstance(packet, Message):
                self._backlog.append(packet)
            else:
                self._control(link, packet)
        self._read_less()
        if not self._paused and self._backlog and not self._more_scheduled:
            self._more_scheduled = True
            self._loop.call_soon(self._deliver_backlog, link)

    def _deliver_backlog(self, link: Link | None) -> None:
        self._more_scheduled = False
        if link is not self._link or link is None or self._paused:
            return
        held, self._backlog = self._backlog, []
        self._deliver(link, held)
        if not self._backlog and not self._paused:
            self._read_more()

    def _read_less(self) -> None:
        link = self._link
        if not self._reading_paused and link is not None and link.transport is not None:
            self._reading_paused = True
            link.transport.pause_reading()

    def _read_more(self) -> None:
        link = self._link
        if (
            (self._reading_paused or self._stopping)
            and link is not None
            and link.transport is not None
        ):
            self._reading_paused = False
            link.transport.resume_reading()

    def _control(self, link: Link, packet: Packet) -> None:
        if isinstance(packet, ConnAck):
            if not link.connack.done():
                link.connack.set_result(packet)
        elif isinstance(packet, SubAck | UnsubAck | PubAck):
            waiter = self._pending.pop(packet.packet_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(packet)
        elif isinstance(packet, Disconnect):
            log.warning(
                "MQTT broker %s disconnected us: reason 0x%02x",
                self.endpoint.redacted(),
                packet.reason_code,
            )
            if link.transport is not None:
                link.transport.close()
        # PINGRESP: hearing anything is what the keepalive check looks at
