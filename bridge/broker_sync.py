"""The hub's broker subscriptions kept in line with the filters in use (bridge/hub.py).

Every change to the filters in use marks broker filters dirty; one reconciler (``_sync``) at a
time turns them into SUBSCRIBE and UNSUBSCRIBE requests, so they reach the broker in the order
the changes were made. Over MQTT 5 each filter in use is its own broker subscription (with an
identifier where it overlaps another); over MQTT 3.1.1 the broker holds the disjoint cover of
bridge/broker_filters.py. Kept apart from the hub's connection and dispatch so each can be read
on its own; :class:`~bridge.hub.Hub` is the one class that uses it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from bridge.broker_filters import Cover
from bridge.routes import Echoes, Routes
from ingest.mqtt import AsyncMqtt, Message

# logged as the hub: one component to an operator, however the source is split
log = logging.getLogger("bridge.hub")

# SUBSCRIBE/UNSUBSCRIBE requests in flight at once
_BATCH = 256
# MQTT 5 retain handling 2: the broker sends no retained copies on subscribing (they would be
# dropped on arrival anyway, _dispatch)
_NO_RETAINED = 2


class BrokerClient(Protocol):
    """What the hub asks of its connection (ingest/mqtt.py's AsyncMqtt; tests stand in)."""

    async def subscribe_and_wait(
        self, filter_: str, *, qos: int = 0, subscription_id: int = 0, retain_handling: int = 0
    ) -> int: ...

    async def unsubscribe_and_wait(self, filters: Sequence[str]) -> None: ...

    async def publish_and_wait(self, topic: str, payload: bytes, *, qos: int = 1) -> None: ...


class ThisConnection:
    """The client for as long as the connection it has now lasts. A new one is made for each
    connection, so the hub's ``self._client is client`` checks see a reconnection as a
    different client, and requests of a connection given up fail instead of reaching the
    next one."""

    __slots__ = ("_client", "_generation")

    def __init__(self, client: AsyncMqtt) -> None:
        self._client = client
        self._generation = client.generation

    def _check(self) -> AsyncMqtt:
        if self._client.generation != self._generation:
            raise ConnectionError("that MQTT connection is gone")
        return self._client

    async def subscribe_and_wait(
        self, filter_: str, *, qos: int = 0, subscription_id: int = 0, retain_handling: int = 0
    ) -> int:
        return await self._check().subscribe_and_wait(
            filter_, qos=qos, subscription_id=subscription_id, retain_handling=retain_handling
        )

    async def unsubscribe_and_wait(self, filters: Sequence[str]) -> None:
        await self._check().unsubscribe_and_wait(filters)

    async def publish_and_wait(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        await self._check().publish_and_wait(topic, payload, qos=qos)


class BrokerSync:
    """The reconciler half of :class:`~bridge.hub.Hub`, which sets these attributes up and
    owns the connection; this class only reads and updates them."""

    _routes: Routes
    # None: every filter in use is its own broker subscription; a Cover: disjoint filters
    _cover: Cover | None
    _on_broker: dict[str, int]  # broker filter -> its identifier (0: none)
    _dirty: dict[str, None]  # broker filters to reconcile, in order
    _sync_lock: asyncio.Lock
    _echoes: Echoes
    _client: BrokerClient | None
    _held: list[Message] | None
    received: int

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
                    last = self._numbered_so_far()
                    for f in batch:
                        if f not in self._dirty:  # else changed again meanwhile
                            self._routes.settled(f, last)

    def _numbered_so_far(self) -> int:
        """The number the last message read so far will have been dispatched under. Our client
        hands messages over as it reads them, before any SUBACK read after them wakes its
        waiter; those of a connection being set up wait in ``_held``."""
        return self.received + (len(self._held) if self._held is not None else 0)

    async def _apply(
        self, client: BrokerClient, subscribe: list[tuple[str, int]], unsubscribe: list[str]
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
                    await client.unsubscribe_and_wait(chunk)
                except (ConnectionError, TimeoutError):
                    done = False
        finally:
            if replacing:
                # every copy routed before the last UNSUBACK has arrived by now: the ones
                # queued, and at most one taken off the queue but not yet dispatched
                self._echoes.close_after(self._numbered_so_far())
        return done

    async def _subscribe(self, client: BrokerClient, filter_: str, sid: int) -> bool:
        try:
            code = await client.subscribe_and_wait(
                filter_, qos=0, subscription_id=sid, retain_handling=_NO_RETAINED
            )
        except (ConnectionError, TimeoutError):
            return False  # resubscribed on reconnect
        if code >= 0x80:
            log.warning("the MQTT broker refused a subscription to %s (0x%02x)", filter_, code)
        if self._client is client:  # not a connection given up meanwhile
            self._on_broker[filter_] = sid
        return True
