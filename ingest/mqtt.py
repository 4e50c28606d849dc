"""One MQTT connection on an asyncio Protocol over our own codec (ingest/mqtt_packets.py).

Why not paho or aiomqtt (numbers in docs/decisions.md): the ingest must acknowledge a QoS 1
message only after its rows are committed, which aiomqtt 2.x does not allow; and paho builds
an MQTT 5 ``Properties`` object and more per received message, about half of its ~25 us
receive cost, which was a third of the ingest's and the front's busy time. Here one read of
the socket is decoded at once and each PUBLISH becomes one slotted ``Message``, handed to the
handler; nothing is acknowledged unless ``manual_ack`` is off or ``ack()`` is called. That
receiving side, with its flow control, is ingest/mqtt_receive.py; this module keeps the
connection up and makes the requests.

``generation`` increases on every connection loss: a message id from an older generation must
never be acknowledged on the new connection (ids are reused; the broker redelivers the
unacknowledged messages of a persistent session instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from ingest import mqtt_packets as mp
from ingest.mqtt_endpoint import MqttEndpoint, set_nodelay
from ingest.mqtt_receive import Link, MessageHandler, Receiver
from ingest.mqtt_types import ConnAck, Message, Packet, ProtocolError, SubAck, connack_reason

__all__ = ["AsyncMqtt", "Message", "MessageHandler", "MqttEndpoint", "set_nodelay"]

log = logging.getLogger(__name__)

_WAIT_S = 10.0  # CONNACK, SUBACK, UNSUBACK, PUBACK: every wait has a deadline


class _Refused(Exception):
    pass


class AsyncMqtt(Receiver):
    """Keeps one MQTT connection up (jittered backoff) and hands received messages over."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        *,
        on_message: MessageHandler,
        subscriptions: list[tuple[str, int]] | None = None,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        receive_maximum: int = 65535,
        manual_ack: bool = False,
        keepalive: int = 30,
        on_connection_lost: Callable[[], None] | None = None,
        retained_on_resubscribe: bool = True,
        retain_as_published: bool = False,
        on_connect: Callable[[ConnAck], Awaitable[None]] | None = None,
        on_burst_end: Callable[[], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.generation = 0
        self.connected = asyncio.Event()
        self.connack: ConnAck | None = None
        self._loop = asyncio.get_running_loop()
        self._v5 = endpoint.protocol == "5"
        self._subscriptions = list(subscriptions or [])
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = receive_maximum
        self._auto_ack = not manual_ack
        self._keepalive = keepalive
        self._on_message = on_message
        self._on_connection_lost = on_connection_lost
        self._on_connect = on_connect
        self._on_burst_end = on_burst_end
        # MQTT 5 "retain handling": 1 asks the broker for retained messages only when a
        # subscription is new, not each time a reconnect subscribes again to what the
        # persistent session still holds. (MQTT 3.1.1 has no such option.)
        self._retain_handling = 0 if retained_on_resubscribe else 1
        # MQTT 5 "retain as published": live messages keep the retain flag their publisher set
        # (by default the broker clears it, and only copies sent on subscribing carry it).
        self._retain_as_published = retain_as_published
        # the receiving side's state: see the declarations in ingest/mqtt_receive.py
        self._link = None
        self._pending = {}
        self._paused = self._reading_paused = self._more_scheduled = False
        self._backlog = []
        self._next_id = 0
        self._out: list[bytes] = []  # written together once per loop turn
        self._flush_handle: asyncio.Handle | None = None
        self._last_heard = 0.0
        self._stopping = False
        self._connect_task: asyncio.Task[None] | None = None
        self._ping_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (retrying with backoff until it works), subscribe, and return once the
        broker has answered. Callers bound the wait with ``asyncio.timeout`` if they want."""
        self._ping_task = asyncio.create_task(self._ping_loop(), name="mqtt-ping")
        self._connect_task = asyncio.create_task(self._connect_loop(), name="mqtt-connect")
        await self.connected.wait()

    async def stop(self) -> None:
        """Disconnect cleanly (a persistent session stays on the broker). Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        tasks = [t for t in (self._connect_task, self._ping_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        link = self._link
        if link is not None and link.transport is not None:
            if self.connected.is_set():
                self._flush()  # acknowledgements and publishes still queued leave first
                link.transport.write(mp.DISCONNECT)
                # The broker closes once it has read the DISCONNECT. Closing first would throw
                # away what it has not read yet when unread data of ours makes the kernel
                # answer with a reset (seen: the last PUBACKs lost). What arrives meanwhile is
                # read and dropped (_received), unacknowledged: the session keeps it.
                self._read_more()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(link.closed.wait(), 2)
            link.transport.abort()
        self.connected.clear()

    # -- operations ------------------------------------------------------------------------
    def ack(self, mid: int, qos: int) -> None:
        """PUBACK a QoS 1 message of the current connection (the caller checks the generation
        it received it in, as ingest/service.py does)."""
        if qos == 1:
            self._send(mp.puback(mid))

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Fire and forget; dropped while disconnected."""
        pid = self._packet_id(None) if qos else 0
        self._send(mp.publish(topic, payload, v5=self._v5, qos=qos, retain=retain, packet_id=pid))

    async def publish_and_wait(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Publish and, at QoS 1, wait for the PUBACK. ConnectionError if not connected or
        lost meanwhile; TimeoutError if the broker does not answer in time."""
        if qos == 0:
            self._require_link()
            self.publish(topic, payload)
            return
        await self._request(
            lambda pid: mp.publish(topic, payload, v5=self._v5, qos=qos, packet_id=pid)
        )

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe now (when connected) and again on every reconnection."""
        self._subscriptions.append((topic, qos))
        if self.connected.is_set():
            self._send(self._subscribe_packet(self._packet_id(None), topic, qos))

    async def add_subscription(self, topic: str, qos: int = 1) -> int | None:
        """Subscribe now (when connected) and again on every reconnection, with this
        connection's subscription options; the SUBACK's reason code, None when not connected
        (the next connection subscribes)."""
        self._subscriptions.append((topic, qos))
        if not self.connected.is_set():
            return None
        ack = await self._request(lambda pid: self._subscribe_packet(pid, topic, qos))
        assert isinstance(ack, SubAck)
        return ack.reason_codes[0]

    async def remove_subscription(self, topic: str) -> None:
        """Unsubscribe now (when connected) and no more on reconnections."""
        self._subscriptions = [s for s in self._subscriptions if s[0] != topic]
        if self.connected.is_set():
            await self.unsubscribe_and_wait([topic])

    async def subscribe_and_wait(
        self, filter_: str, *, qos: int = 0, subscription_id: int = 0, retain_handling: int = 0
    ) -> int:
        """One subscription, not remembered across reconnections; the SUBACK's reason code."""
        ack = await self._request(
            lambda pid: mp.subscribe(
                pid,
                [filter_],
                v5=self._v5,
                qos=qos,
                retain_handling=retain_handling,
                subscription_id=subscription_id,
            )
        )
        assert isinstance(ack, SubAck)
        return ack.reason_codes[0]

    async def unsubscribe_and_wait(self, filters: Sequence[str]) -> None:
        await self._request(lambda pid: mp.unsubscribe(pid, filters, v5=self._v5))

    def socket(self) -> socket.socket | None:
        """The connection's socket (tests cut it as a network failure would)."""
        link = self._link
        if link is None or link.transport is None:
            return None
        return cast("socket.socket | None", link.transport.get_extra_info("socket"))

    # -- connection loss (on the loop, from Link) ------------------------------------------
    def _lost(self, link: Link, exc: Exception | None) -> None:
        if link is not self._link:
            return
        self._link = None
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.generation += 1
        self._out.clear()  # acknowledgements of this connection must not reach the next one
        self._reset_reading()
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionError("MQTT connection lost"))
        if self._stopping:
            return
        if was_connected:
            log.warning("lost MQTT connection to %s: %s", self.endpoint.redacted(), exc)
        if self._on_connection_lost is not None:
            self._on_connection_lost()
        if self._connect_task is None or self._connect_task.done():
            self._connect_task = self._loop.create_task(self._connect_loop(), name="mqtt-reconnect")

    # -- sending ---------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        """Queue ``data`` for this loop turn's one write (dropped while disconnected)."""
        if self._link is None:
            return
        self._out.append(data)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        link = self._link
        if self._out and link is not None and link.transport is not None:
            link.transport.write(b"".join(self._out) if len(self._out) > 1 else self._out[0])
        self._out.clear()

    def _packet_id(self, waiter: asyncio.Future[Packet] | None) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._pending:
                self._pending[self._next_id] = waiter
                return self._next_id
        raise RuntimeError("all 65535 MQTT packet ids are in use")

    def _require_link(self) -> Link:
        link = self._link
        if link is None or link.transport is None or link.transport.is_closing():
            raise ConnectionError("the MQTT broker is not connected")
        return link

    async def _request(self, build: Callable[[int], bytes]) -> Packet:
        self._require_link()
        waiter: asyncio.Future[Packet] = self._loop.create_future()
        pid = self._packet_id(waiter)
        self._send(build(pid))
        try:
            return await asyncio.wait_for(waiter, _WAIT_S)
        finally:
            if self._pending.get(pid) is waiter:
                del self._pending[pid]

    def _subscribe_packet(self, pid: int, topic: str, qos: int) -> bytes:
        return mp.subscribe(
            pid,
            [topic],
            v5=self._v5,
            qos=qos,
            retain_as_published=self._retain_as_published,
            retain_handling=self._retain_handling,
        )

    # -- background ------------------------------------------------------------------------
    async def _connect_loop(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                await self._connect_once()
                return
            except _Refused as exc:
                log.error(
                    "MQTT broker %s refused the connection: %s; retrying in %.1fs",
                    self.endpoint.redacted(),
                    exc,
                    delay,
                )
            except (OSError, TimeoutError, ssl.SSLError, ProtocolError) as exc:
                log.warning(
                    "cannot reach MQTT broker %s (%s); retrying in %.1fs. Is the broker "
                    "running, and is BRIDGE_MQTT_URL right? (`telemetry-bridge doctor` checks)",
                    self.endpoint.redacted(),
                    exc or type(exc).__name__,
                    delay,
                )
            except Exception:
                # Never let the reconnect task die quietly: that would leave us offline forever.
                log.exception("unexpected error connecting to %s", self.endpoint.redacted())
            link = self._link
            if link is not None and link.transport is not None:
                link.transport.abort()  # drop a half-open attempt before retrying
            await asyncio.sleep(delay * (0.5 + random.random()))  # jitter: no reconnect herds
            delay = min(delay * 2, 10.0)

    async def _connect_once(self) -> None:
        ep = self.endpoint
        ctx = ssl.create_default_context() if ep.tls else None
        async with asyncio.timeout(_WAIT_S):
            transport, link = await self._loop.create_connection(
                lambda: Link(self), ep.host, ep.port, ssl=ctx
            )
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # our acknowledgements and publishes must not wait up to 40 ms behind Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._link = link
        self._reset_reading()
        transport.write(
            mp.connect(
                self.client_id,
                v5=self._v5,
                clean_start=self._clean_start,
                keepalive=self._keepalive,
                username=ep.login(self.client_id),
                password=ep.password,
                session_expiry_s=self._session_expiry_s,
                receive_maximum=self._receive_maximum,
            )
        )
        ack = await asyncio.wait_for(link.connack, _WAIT_S)
        if ack.reason_code:
            raise _Refused(connack_reason(ack.reason_code, v5=self._v5))
        self.connack = ack
        self._last_heard = self._loop.time()
        log.info(
            "connected to MQTT broker %s (session present: %s)", ep.redacted(), ack.session_present
        )
        # a copy: add_subscription/remove_subscription may change the list meanwhile
        subscriptions = list(self._subscriptions)
        results = await asyncio.gather(
            *(self._subscribe_once(topic, qos) for topic, qos in subscriptions)
        )
        for (topic, _), code in zip(subscriptions, results, strict=True):
            if code >= 0x80:
                log.error("MQTT broker %s refused the subscription to %s: reason 0x%02x",
                          ep.redacted(), topic, code)  # fmt: skip
        if self._on_connect is not None:
            await self._on_connect(ack)
        if link is not self._link:
            raise ConnectionError("connection lost while subscribing")
        self.connected.set()

    async def _subscribe_once(self, topic: str, qos: int) -> int:
        ack = await self._request(lambda pid: self._subscribe_packet(pid, topic, qos))
        assert isinstance(ack, SubAck)
        return ack.reason_codes[0]

    async def _ping_loop(self) -> None:
        """PINGREQ twice per keepalive; a connection that says nothing for a whole keepalive
        (while we read it) is dead, whatever TCP believes."""
        while not self._stopping:
            keepalive = (self.connack and self.connack.server_keepalive) or self._keepalive
            await asyncio.sleep(max(keepalive / 2, 0.5) if keepalive else 5)
            link = self._link
            if not keepalive or link is None or link.transport is None:
                continue
            if not self.connected.is_set():
                continue
            if not self._paused and self._loop.time() - self._last_heard > keepalive:
                log.warning(
                    "MQTT broker %s did not answer for %ds: dropping the connection",
                    self.endpoint.redacted(),
                    keepalive,
                )
                link.transport.abort()
                continue
            self._send(mp.PINGREQ)
