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

Broker subscriptions follow the filters in use through one reconciler (``_sync``), so changes
reach the broker in order, and reconnects (jittered backoff) resubscribe everything in use.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable, Iterable
from typing import Any

import aiomqtt
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridge.broker_filters import Cover
from bridge.broker_filters import matches as topic_matches
from bridge.routes import Echoes, Route, Routes
from ingest.acyclic_matcher import install as install_acyclic_matcher
from ingest.mqtt import MqttEndpoint
from ingest.topics import Topics

__all__ = ["Hub", "Listener", "topic_matches"]

log = logging.getLogger(__name__)

# (stream levels without prefix, decoded payload, retained?, frame cache) -> None.
# Listeners must not block. The frame cache lives for one broker message: subscribers with the
# same subscription shape reuse the frame the first of them built (serialise once).
Listener = Callable[[tuple[str, ...], dict[str, Any], bool, dict[Any, Any]], None]

# SUBSCRIBE/UNSUBSCRIBE calls in flight at once (aiomqtt scans its pending calls on each one)
_BATCH = 256


class Hub:
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

    def _changed(self, filter_: str, *, added: bool) -> None:
        """A filter came into use or went out of it: mark the broker filters to reconcile."""
        if self._cover is None:
            self._dirty[filter_] = None
            return
        subscribe, unsubscribe = (self._cover.add if added else self._cover.remove)(filter_)
        for f in (*subscribe, *unsubscribe):
            self._dirty[f] = None

    def _wanted(self, broker_filter: str) -> int | None:
        """The identifier ``broker_filter`` should be subscribed with (0: none), or None if
        it should not be subscribed."""
        if self._cover is None:
            route = self._routes.get(broker_filter)
            if route is None:
                return None
            return route.sid if route.tagged else 0
        return 0 if self._cover.members(broker_filter) else None

    async def _sync(self) -> None:
        """Bring the broker's subscriptions in line with the filters in use (the dirty ones).
        One caller at a time, so SUBSCRIBE and UNSUBSCRIBE packets leave in the order the
        changes were made; in identifier mode, older filters are subscribed first."""
        async with self._sync_lock:
            client = self._client
            while self._dirty and client is not None and self._client is client:
                batch = list(self._dirty)
                self._dirty.clear()
                subscribe: list[tuple[str, int]] = []
                unsubscribe: list[str] = []
                for f in batch:
                    want, have = self._wanted(f), self._on_broker.get(f)
                    if want is not None and want != have:
                        subscribe.append((f, want))
                    elif want is None and have is not None:
                        unsubscribe.append(f)
                done = await self._apply(client, subscribe, unsubscribe)
                if done and self._cover is None and self._client is client:
                    # the broker holds these as the routes in use say; copies it sent
                    # otherwise have all arrived: the queued ones, and at most one taken off
                    # the queue but not yet dispatched
                    last = self.received + len(client.messages) + 1
                    for f in batch:
                        if f not in self._dirty:  # else changed again meanwhile
                            self._routes.settled(f, last)

    async def _apply(
        self, client: aiomqtt.Client, subscribe: list[tuple[str, int]], unsubscribe: list[str]
    ) -> bool:
        """Send the changes, subscriptions first; whether the broker acknowledged them all."""
        # Replacing disjoint broker filters: subscribe the new ones first (nothing in use is
        # ever uncovered), then unsubscribe; what the broker routes in between can come twice.
        replacing = self._cover is not None and bool(subscribe) and bool(unsubscribe)
        if replacing:
            self._echoes.open(unsubscribe)
        done = True
        try:
            for i in range(0, len(subscribe), _BATCH):
                results = await asyncio.gather(
                    *(self._subscribe(client, f, sid) for f, sid in subscribe[i : i + _BATCH])
                )
                done = done and all(results)
            for i in range(0, len(unsubscribe), _BATCH):
                chunk = unsubscribe[i : i + _BATCH]
                if self._client is not client:
                    return False
                for f in chunk:
                    self._on_broker.pop(f, None)
                try:
                    await client.unsubscribe(chunk)
                except aiomqtt.MqttError:
                    done = False
        finally:
            if replacing:
                # every copy routed before the last UNSUBACK has arrived by now: the ones
                # queued, and at most one taken off the queue but not yet dispatched
                self._echoes.close_after(self.received + len(client.messages) + 1)
        return done

    async def _subscribe(self, client: aiomqtt.Client, filter_: str, sid: int) -> bool:
        properties = options = None
        if sid:
            properties = Properties(PacketTypes.SUBSCRIBE)
            properties.SubscriptionIdentifier = sid
        if self.endpoint.protocol == "5":
            # retained copies are dropped on arrival (_dispatch): do not have them sent
            options = SubscribeOptions(qos=0, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
        try:
            await client.subscribe(filter_, qos=0, options=options, properties=properties)
        except aiomqtt.MqttError:
            return False  # resubscribed on reconnect
        if self._client is client:  # not a connection given up meanwhile
            self._on_broker[filter_] = sid
        return True

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
                connack: dict[str, Any] = {}
                _capture_connack(client, connack)
                async with client:
                    await client.subscribe(self._resync_topic, qos=0)
                    if self._cover is None and connack.get("SubscriptionIdentifierAvailable") == 0:
                        log.warning(
                            "the MQTT broker offers no subscription identifiers: holding "
                            "only disjoint filters on it instead"
                        )
                        self._cover = Cover(r.filter for r in self._routes)
                    if self._cover is None:
                        self._routes.plain_again()
                    # a new session holds nothing: everything in use is to subscribe, oldest
                    # first (filters added from now on queue up behind)
                    self._on_broker.clear()
                    self._echoes = Echoes()
                    self._dirty.clear()
                    in_use: Iterable[str] = (
                        (r.filter for r in self._routes)
                        if self._cover is None
                        else self._cover.broker_filters()
                    )
                    self._dirty.update(dict.fromkeys(in_use))
                    self._client = client
                    await self._sync()
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
        if self._cover is None:
            props = msg.properties
            # (paho keeps properties as instance attributes: a lookup that raises nothing
            # when absent, as getattr with a default would, at a cost, on every plain copy)
            sids = props.__dict__.get("SubscriptionIdentifier") if props is not None else None
            listeners = self._for_sids(sids, topic) if sids else self._routes.for_plain(topic)
        elif self._echoes.active and self._echoes.repeat(self.received, topic, msg.payload):
            return
        else:
            listeners = self._routes.for_topic(topic)
        frames: dict[Any, Any] = {}
        retained = bool(msg.retain)
        for listener in listeners:
            listener(levels, event, retained, frames)

    def _for_sids(self, sids: list[int], topic: str) -> list[Listener]:
        """Listeners of a copy sent for the subscription(s) with these identifiers."""
        routes: list[Route] = []
        for sid in sids:
            route = self._routes.by_sid(sid)
            if route is not None:  # else sent for a filter no longer in use
                routes.append(route)
        return self._routes.for_copy(routes, topic) if routes else []


def _capture_connack(client: aiomqtt.Client, into: dict[str, Any]) -> None:
    """Keep the CONNACK's properties (whether the broker offers subscription identifiers);
    aiomqtt does not expose them."""
    paho_client = client._client
    inner = paho_client.on_connect

    def on_connect(*args: Any) -> None:
        props = args[4] if len(args) > 4 else None
        if props is not None:
            available = getattr(props, "SubscriptionIdentifierAvailable", None)
            if available is not None:
                into["SubscriptionIdentifierAvailable"] = available
        if inner is not None:
            inner(*args)

    paho_client.on_connect = on_connect
