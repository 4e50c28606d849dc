"""Publish-only MQTT connection for the validated stream (QoS 0, retained).

Why not paho: the ingest republishes every stored reading, 5 or more per device message.
paho's ``publish()`` costs ~15 us per call here (it allocates a message-info object with a
threading.Condition and issues one ``send()`` per packet), which alone capped the ingest below
its target. A QoS 0 PUBLISH needs no state at all, so this module frames packets itself and
writes a whole batch with one ``transport.write`` (~1 us per reading; numbers in
docs/decisions.md). Everything stateful (QoS 1 consumption, manual acks, sessions) stays on
paho. The wire format is MQTT 3.1.1 section 3.3 / MQTT 5 section 3.3.

QoS 0 means best effort by definition: while disconnected, or while the broker reads slower
than we write (more than ``max_buffer`` bytes queued), stream messages are dropped and
counted; the database has every reading, and the next reading of a metric refreshes its
retained value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Iterable
from typing import cast

import orjson

from ingest.mqtt import MqttEndpoint

log = logging.getLogger(__name__)

PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def publish_packet(topic: bytes, payload: bytes, *, retain: bool, v5: bool) -> bytes:
    """One QoS 0 PUBLISH packet (no packet id; an empty property list for MQTT 5)."""
    body_len = 2 + len(topic) + (1 if v5 else 0) + len(payload)
    header = (0x31 if retain else 0x30).to_bytes(1, "big") + _varint(body_len)
    return b"".join((header, len(topic).to_bytes(2, "big"), topic, b"\x00" if v5 else b"", payload))


def connect_packet(
    client_id: str, *, username: str | None, password: str | None, keepalive: int, v5: bool
) -> bytes:
    flags = 0x02  # clean session: a QoS 0 publisher has nothing to resume
    if username is not None:
        flags |= 0x80
        if password is not None:
            flags |= 0x40
    variable = _string(b"MQTT") + bytes([5 if v5 else 4, flags]) + keepalive.to_bytes(2, "big")
    if v5:
        variable += b"\x00"  # no properties
    payload = _string(client_id.encode())
    if username is not None:
        payload += _string(username.encode())
        if password is not None:
            payload += _string(password.encode())
    body = variable + payload
    return b"\x10" + _varint(len(body)) + body


def parse_packets(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Split complete packets off the front of ``buffer``: [(packet type, body)]."""
    packets: list[tuple[int, bytes]] = []
    while len(buffer) >= 2:
        length, shift, pos = 0, 0, 1
        while True:
            if pos >= len(buffer):
                return packets  # remaining length not complete yet
            byte = buffer[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ValueError("malformed remaining length")
        if len(buffer) < pos + length:
            return packets
        packets.append((buffer[0] >> 4, bytes(buffer[pos : pos + length])))
        del buffer[: pos + length]
    return packets


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: StreamPublisher) -> None:
        self.owner = owner
        self.buffer = bytearray()
        self.connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            packets = parse_packets(self.buffer)
        except ValueError:
            if self.transport is not None:
                self.transport.close()
            return
        for kind, body in packets:
            if kind == 2 and not self.connack.done():  # CONNACK: byte 1 is the return code
                self.connack.set_result(body[1] if len(body) > 1 else 255)
            elif kind == 14 and self.transport is not None:  # server DISCONNECT (v5)
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_exception(exc or ConnectionError("closed before CONNACK"))
        self.closed.set()
        self.owner._lost(self)


class StreamPublisher:
    """Keeps one connection up (reconnecting with jittered backoff) and writes batches."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        *,
        keepalive: int = 30,
        max_buffer: int = 32 * 1024 * 1024,
        resync_topic: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.keepalive = keepalive
        self.max_buffer = max_buffer
        self.v5 = endpoint.protocol == "5"
        self.published = 0
        self.dropped = 0
        self.resync_topic = resync_topic
        self._dropped_unannounced = 0
        self._announcing = False
        self._proto: _Protocol | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stream-publisher")

    async def stop(self) -> None:
        self._stopping = True
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.write(DISCONNECT)
            proto.transport.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proto.closed.wait(), 2)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def publish_many(self, items: Iterable[tuple[str, bytes]], *, retain: bool = True) -> None:
        """Frame and write every (topic, payload) at QoS 0; drop (and count) when we cannot."""
        proto = self._proto
        transport = proto.transport if proto is not None and self.connected.is_set() else None
        if transport is None or transport.get_write_buffer_size() > self.max_buffer:
            n = sum(1 for _ in items)
            self.dropped += n
            self._dropped_unannounced += n
            return
        v5 = self.v5
        packets = [publish_packet(t.encode(), p, retain=retain, v5=v5) for t, p in items]
        transport.write(b"".join(packets))
        self.published += len(packets)
        if self._dropped_unannounced and self._announcing is False:
            # dropped earlier while connected (the broker did not keep up): say so now
            self._announcing = True
            try:
                self._announce_resync()
            finally:
                self._announcing = False

    def _announce_resync(self) -> None:
        """Messages were dropped while the connection was down or backed up (they are stored:
        the stream is published after commit). Tell the fronts, which replay them."""
        if self.resync_topic is None or not self._dropped_unannounced:
            return
        body = orjson.dumps({"dropped": self._dropped_unannounced})
        self._dropped_unannounced = 0
        self.publish_many([(self.resync_topic, body)], retain=False)

    def _lost(self, proto: _Protocol) -> None:
        if proto is self._proto:
            self.connected.clear()

    async def _run(self) -> None:
        delay = 0.2
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                ctx = ssl.create_default_context() if self.endpoint.tls else None
                _, proto = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Protocol(self), self.endpoint.host, self.endpoint.port, ssl=ctx
                    ),
                    10,
                )
                assert proto.transport is not None
                proto.transport.write(
                    connect_packet(
                        self.client_id,
                        username=self.endpoint.username,
                        password=self.endpoint.password,
                        keepalive=self.keepalive,
                        v5=self.v5,
                    )
                )
                code = await asyncio.wait_for(proto.connack, 10)
                if code != 0:
                    proto.transport.close()
                    raise ConnectionError(f"broker refused the stream connection (code {code})")
                self._proto = proto
                self.connected.set()
                delay = 0.2
                self._announce_resync()
                while not proto.closed.is_set():
                    # keepalive: any packet within the interval keeps us alive; PINGREQ is cheap
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(proto.closed.wait(), self.keepalive / 2)
                    if not proto.closed.is_set() and proto.transport is not None:
                        proto.transport.write(PINGREQ)
                if not self._stopping:
                    log.warning("stream connection to %s lost", self.endpoint.redacted())
            except (OSError, TimeoutError, ConnectionError, ssl.SSLError) as exc:
                log.warning(
                    "stream connection to %s failed (%s); retrying in %.1fs",
                    self.endpoint.redacted(),
                    exc,
                    delay,
                )
            if self._stopping:
                return
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 10.0)
