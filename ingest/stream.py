"""Publish-only MQTT connection for the validated stream (QoS 0, retained).

Its own connection, apart from the ingest's QoS 1 consumer (ingest/mqtt.py): the ingest
republishes every stored reading, 5 or more per device message, and a QoS 0 PUBLISH needs no
state at all, so a whole batch is framed at once by the codec (ingest/mqtt_packets.py) and
written with one ``transport.write`` (~1 us per reading; numbers in docs/decisions.md), and
no publish waits behind the consumer's flow control.

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

from ingest import mqtt_packets as mp
from ingest.mqtt_endpoint import MqttEndpoint
from ingest.mqtt_types import ConnAck, Disconnect, ProtocolError

log = logging.getLogger(__name__)

# What bench/fanout.py's MQTT-over-WebSocket clients import from here (the codec's names)
connect_packet = mp.connect
parse_packets = mp.split_packets
_varint = mp.varint
_string = mp.mqtt_string


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: StreamPublisher) -> None:
        self.owner = owner
        self.decoder = mp.Decoder(v5=owner.v5)
        self.connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.decoder.feed(data)
        except ProtocolError:
            if self.transport is not None:
                self.transport.close()
            return
        for packet in packets:
            if isinstance(packet, ConnAck) and not self.connack.done():
                self.connack.set_result(packet.reason_code)
            elif isinstance(packet, Disconnect) and self.transport is not None:
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
            proto.transport.write(mp.DISCONNECT)
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
        framed, n = mp.publish_many(items, v5=self.v5, retain=retain)
        transport.write(framed)
        self.published += n
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
                    mp.connect(
                        self.client_id,
                        v5=self.v5,
                        clean_start=True,  # a QoS 0 publisher has nothing to resume
                        keepalive=self.keepalive,
                        username=self.endpoint.login(self.client_id),
                        password=self.endpoint.password,
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
                        proto.transport.write(mp.PINGREQ)
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
