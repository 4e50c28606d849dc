"""The front's side of the broker: one subscription per distinct filter, shared by everyone.

Each MQTT topic filter is subscribed once, reference-counted across all WebSocket clients of
this process, and unsubscribed when its last user leaves. A broker message is decoded once and
handed to every listener whose filter matches. Reconnects (jittered backoff) resubscribe every
filter that is still in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable
from typing import Any

import aiomqtt
import orjson

from bridge.topic_index import TopicIndex
from ingest.acyclic_matcher import install as install_acyclic_matcher
from ingest.mqtt import MqttEndpoint
from ingest.topics import Topics

log = logging.getLogger(__name__)

# (stream levels without prefix, decoded payload, retained?, frame cache) -> None.
# Listeners must not block. The frame cache lives for one broker message: subscribers with the
# same subscription shape reuse the frame the first of them built (serialise once).
Listener = Callable[[tuple[str, ...], dict[str, Any], bool, dict[Any, Any]], None]


def topic_matches(filter_: str, topic: str) -> bool:
    """MQTT filter matching: `+` one level, `#` the rest; `$` topics never match wildcards."""
    if topic.startswith("$") and filter_[:1] in ("+", "#"):
        return False
    f_levels, t_levels = filter_.split("/"), topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels) or (f != "+" and f != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


class Hub:
    def __init__(self, endpoint: MqttEndpoint, topics: Topics, client_id: str) -> None:
        self.endpoint = endpoint
        self.topics = topics
        self.client_id = client_id
        self._listeners: dict[str, set[Listener]] = {}
        self._index = TopicIndex()
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.received = 0
        self.reconnects = 0
        # Called after a *re*connection has resubscribed everything: messages published while
        # the front was cut off never reach it, so listeners that can read them back from
        # storage (sessions with resumable subscriptions) do so.
        self._on_resubscribed: set[Callable[[], None]] = set()
        self._was_connected = False
        # The same callbacks run when a stream publisher (ingest, scheduler) announces that it
        # dropped messages while *it* was cut off: stored, but never streamed.
        self._resync_topic = topics.stream_resync()

    def _resubscribed(self) -> None:
        for callback in list(self._on_resubscribed):
            try:
                callback()
            except Exception:  # one listener's bug must not take the broker connection down
                log.exception("a reconnection listener failed")

    def on_resubscribed(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Register ``callback`` for every reconnection; returns the function that removes it."""
        self._on_resubscribed.add(callback)
        return lambda: self._on_resubscribed.discard(callback)

    # -- subscriptions -----------------------------------------------------------------------
    def subscriptions(self) -> dict[str, int]:
        """Broker filters in use and how many listeners share each."""
        return {f: len(ls) for f, ls in self._listeners.items()}

    async def add(self, filter_: str, listener: Listener) -> None:
        listeners = self._listeners.setdefault(filter_, set())
        first = not listeners
        if first:
            self._index.add(filter_)
        listeners.add(listener)
        if first and self._client is not None and self.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError):  # resubscribed on reconnect
                await self._client.subscribe(filter_, qos=0)

    async def remove(self, filter_: str, listener: Listener) -> None:
        listeners = self._listeners.get(filter_)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[filter_]
            self._index.discard(filter_)
            if self._client is not None and self.connected.is_set():
                with contextlib.suppress(aiomqtt.MqttError):
                    await self._client.unsubscribe(filter_)

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """QoS 1 publish on the front's connection (commands, telemetry from clients)."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise ConnectionError("the MQTT broker is not connected")
        await client.publish(topic, payload, qos=qos)

    # -- the connection --------------------------------------------------------------------
    async def run(self) -> None:
        """Stay connected until cancelled."""
        delay = 0.2
        ep = self.endpoint
        while True:
            try:
                client = aiomqtt.Client(
                    ep.host,
                    ep.port,
                    username=ep.username,
                    password=ep.password,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V5
                    if ep.protocol == "5"
                    else aiomqtt.ProtocolVersion.V311,
                    keepalive=30,
                    tls_context=None,
                    # the front's publishes (commands) must not wait behind Nagle
                    socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
                )
                # aiomqtt wraps paho: give its client the matcher that leaves no garbage
                # cycle per message (ingest/acyclic_matcher.py)
                install_acyclic_matcher(client._client)
                # aiomqtt warns past 10 outstanding calls; a thousand dashboards
                # (re)subscribing at once is normal here, not a sign of trouble
                client.pending_calls_threshold = 100_000
                async with client:
                    self._client = client
                    await client.subscribe(self._resync_topic, qos=0)
                    for filter_ in list(self._listeners):
                        await client.subscribe(filter_, qos=0)
                    self.connected.set()
                    delay = 0.2
                    if self._was_connected:
                        self._resubscribed()  # before any message of the new connection is read
                    self._was_connected = True
                    log.info("front connected to MQTT broker %s", ep.redacted())
                    async for msg in client.messages:
                        self._dispatch(msg)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self._client = None
                self.reconnects += 1
                log.warning(
                    "front lost MQTT broker %s (%s); retry in %.1fs", ep.redacted(), exc, delay
                )
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 10.0)

    def _dispatch(self, msg: aiomqtt.Message) -> None:
        self.received += 1
        if msg.retain:
            # Retained copies arrive only for a broker subscription that is new, i.e. only
            # for the first of the clients sharing it. Current values come from `snapshot`
            # (the database) for everyone alike; the live stream carries only new readings.
            return
        topic = msg.topic.value
        if topic == self._resync_topic:
            log.info("a stream publisher reconnected after dropping messages: replaying")
            self._resubscribed()
            return
        levels = self.topics.parse_stream(topic)
        if levels is None:
            # not the validated stream: a device's command result, which only exact-topic
            # listeners (a pending command) ever subscribe to
            rest = self.topics.strip_prefix(topic)
            if rest is None or not rest.startswith("devices/"):
                return
            levels = tuple(rest.split("/"))
        if not isinstance(msg.payload, bytes | bytearray):
            return
        try:
            event = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            log.warning("ignoring a non-JSON message on %s", topic)
            return
        if not isinstance(event, dict):
            return
        frames: dict[Any, Any] = {}
        retained = bool(msg.retain)
        for filter_ in self._index.match(topic):
            for listener in list(self._listeners.get(filter_, ())):
                listener(levels, event, retained, frames)
