"""The front's side of the broker: one connection, shared by everyone, and each broker message
delivered to each listener exactly once.

Each MQTT topic filter in use is reference-counted across all WebSocket clients of this
process and given up when its last user leaves. Filters of different clients overlap
(``telemetry/+/+`` and ``telemetry/d1/+``), and a broker may send one copy of a message per
matching subscription of the connection; mosquitto 2.0 does so over MQTT 5, the iotcore
fallback broker over MQTT 3.1.1. So (bridge/routes.py):

- over MQTT 5 (when the broker offers subscription identifiers) each filter is its own broker
  subscription; those that overlap another carry their own identifier, and a copy goes only
  to the listeners of the subscription(s) it names (or, without identifier, of the one
  identifier-less filter it matches);
- otherwise the broker holds only pairwise-disjoint filters that cover those in use
  (bridge/broker_filters.py), each message comes once, and the listeners of every matching
  filter in use are found locally.

Broker subscriptions follow the filters in use through one reconciler (``_sync``,
bridge/broker_sync.py), so changes reach the broker in order, and reconnects (jittered
backoff) resubscribe everything in use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from bridge.broker_filters import Cover
from bridge.broker_filters import matches as topic_matches
from bridge.broker_sync import BrokerClient, BrokerSync, ThisConnection
from bridge.routes import Echoes, Route, Routes
from ingest.mqtt import AsyncMqtt, Message, MqttEndpoint
from ingest.mqtt_types import ConnAck
from ingest.topics import Topics

__all__ = ["Hub", "Listener", "topic_matches"]

log = logging.getLogger(__name__)

# (stream levels without prefix, decoded payload, retained?, frame cache) -> None.
# Listeners must not block. The frame cache lives for one broker message: subscribers with the
# same subscription shape reuse the frame the first of them built (serialise once).
Listener = Callable[[tuple[str, ...], dict[str, Any], bool, dict[Any, Any]], None]


class Hub(BrokerSync):
    def __init__(self, endpoint: MqttEndpoint, topics: Topics, client_id: str) -> None:
        self.endpoint = endpoint
        self.topics = topics
        self.client_id = client_id
        self._routes = Routes()
        # None: every filter in use is its own broker subscription, with its own MQTT 5
        # subscription identifier where it overlaps another. A Cover: the broker holds
        # disjoint filters (MQTT 3.1.1).
        self._cover: Cover | None = None if endpoint.protocol == "5" else Cover()
        self._on_broker: dict[str, int] = {}  # broker filter -> its identifier (0: none)
        self._dirty: dict[str, None] = {}  # broker filters to reconcile, in order
        self._sync_lock = asyncio.Lock()
        self._echoes = Echoes()
        self._client: BrokerClient | None = None
        # Messages of a new connection read while it is being set up (resubscribing): handed
        # to listeners once that is done, after the reconnection callbacks. None otherwise.
        self._held: list[Message] | None = None
        self._on_burst_end: set[Callable[[], None]] = set()
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

    def on_burst_end(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Register ``callback`` to run after the messages of one broker read were handed to
        listeners (a place to flush what they queued); returns the function that removes it."""
        self._on_burst_end.add(callback)
        return lambda: self._on_burst_end.discard(callback)

    def _burst_end(self) -> None:
        for callback in list(self._on_burst_end):
            try:
                callback()
            except Exception:  # one listener's bug must not take the broker connection down
                log.exception("a burst-end listener failed")

    # -- subscriptions -----------------------------------------------------------------------
    def subscriptions(self) -> dict[str, int]:
        """Broker subscriptions held and how many listeners each one serves."""
        if self._cover is None:
            return {r.filter: len(r.listeners) for r in self._routes}
        out: dict[str, int] = {}
        for broker_filter in self._cover.broker_filters():
            out[broker_filter] = 0
            for f in self._cover.members(broker_filter):
                route = self._routes.get(f)
                out[broker_filter] += len(route.listeners) if route is not None else 0
        return out

    async def add(self, filter_: str, listener: Listener) -> None:
        """Deliver messages matching ``filter_`` to ``listener``; returns once the broker
        subscription carrying them is in place (when connected)."""
        route = self._routes.add(filter_, listener)
        if route is not None:
            if self._cover is None:
                for other in self._routes.place(route, self.received):
                    self._dirty[other.filter] = None  # resubscribed with its identifier first
            self._changed(filter_, added=True)
        await self._sync()

    async def remove(self, filter_: str, listener: Listener) -> None:
        route = self._routes.remove(filter_, listener)
        if route is not None:
            if self._cover is None:
                self._routes.unplace(route)
            self._changed(filter_, added=False)
            await self._sync()

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """QoS 1 publish on the front's connection (commands, telemetry from clients); returns
        once the broker has it."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise ConnectionError("the MQTT broker is not connected")
        await client.publish_and_wait(topic, payload, qos=qos)

    # -- the connection --------------------------------------------------------------------
    async def run(self) -> None:
        """Stay connected until cancelled (the client reconnects with jittered backoff)."""
        client = AsyncMqtt(
            self.endpoint,
            self.client_id,
            on_message=self._receive,
            on_burst_end=self._burst_end,
            subscriptions=[(self._resync_topic, 0)],
            keepalive=30,
            on_connect=lambda ack: self._connected(client, ack),
            on_connection_lost=self._lost,
        )
        try:
            await client.start()
            await asyncio.Event().wait()  # until cancelled
        finally:
            await client.stop()
            self._client = None
            self.connected.clear()

    async def _connected(self, client: AsyncMqtt, connack: ConnAck) -> None:
        """A new connection (a new, empty session): subscribe everything in use again."""
        self._held = []
        try:
            if self._cover is None and not connack.subscription_ids_available:
                log.warning(
                    "the MQTT broker offers no subscription identifiers: holding "
                    "only disjoint filters on it instead"
                )
                self._cover = Cover(r.filter for r in self._routes)
            if self._cover is None:
                self._routes.plain_again()
            # a new session holds nothing: everything in use is to subscribe, oldest first
            # (filters added from now on queue up behind)
            self._on_broker.clear()
            self._echoes = Echoes()
            self._dirty.clear()
            in_use: Iterable[str] = (
                (r.filter for r in self._routes)
                if self._cover is None
                else self._cover.broker_filters()
            )
            self._dirty.update(dict.fromkeys(in_use))
            this = self._client = ThisConnection(client)
            await self._sync()
            if self._client is not this:  # lost meanwhile: the client connects again
                raise ConnectionError("MQTT connection lost while resubscribing")
            self.connected.set()
            if self._was_connected:
                self._resubscribed()  # before any message of the new connection is handled
            self._was_connected = True
            log.info("front connected to MQTT broker %s", self.endpoint.redacted())
        finally:
            held, self._held = self._held, None
            for msg in held:
                self._dispatch(msg)
            if held:
                self._burst_end()

    def _lost(self) -> None:
        if self._client is not None:
            self.reconnects += 1
        self.connected.clear()
        self._client = None

    def _receive(self, msg: Message) -> None:
        held = self._held
        if held is not None:
            held.append(msg)
        else:
            self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        self.received += 1
        if msg.retain:
            # Retained copies arrive only for a broker subscription that is new, i.e. only
            # for the first of the clients sharing it. Current values come from `snapshot`
            # (the database) for everyone alike; the live stream carries only new readings.
            return
        topic = msg.topic
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
        try:
            event = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            log.warning("ignoring a non-JSON message on %s", topic)
            return
        if not isinstance(event, dict):
            return
        if self._cover is None:
            sids = msg.subscription_ids
            listeners = self._for_sids(sids, topic) if sids else self._routes.for_plain(topic)
        elif self._echoes.active and self._echoes.repeat(self.received, topic, msg.payload):
            return
        else:
            listeners = self._routes.for_topic(topic)
        frames: dict[Any, Any] = {}
        retained = bool(msg.retain)
        for listener in listeners:
            listener(levels, event, retained, frames)

    def _for_sids(self, sids: tuple[int, ...], topic: str) -> list[Listener]:
        """Listeners of a copy sent for the subscription(s) with these identifiers."""
        routes: list[Route] = []
        for sid in sids:
            route = self._routes.by_sid(sid)
            if route is not None:  # else sent for a filter no longer in use
                routes.append(route)
        return self._routes.for_copy(routes, topic) if routes else []
