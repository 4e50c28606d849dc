"""Who gets a broker message: the filters in use, their listeners, and exactly-once delivery.

The front holds one broker connection for all its clients, with one subscription per distinct
filter. A topic can match several of those filters (client A watches ``telemetry/+/+``, client
B ``telemetry/d1/+``), and the broker may then send one copy per matching subscription. Two
ways to hand each listener each message once, chosen by bridge/hub.py:

- MQTT 5: a filter that overlaps another is subscribed with its own subscription identifier,
  every copy sent through it names it, and :meth:`Routes.for_copy` gives a copy only to the
  listeners of the filters it names. The identifiers are how the copies are told apart, so it
  does not matter whether the broker sends one copy per subscription (mosquitto 2.0) or one
  copy naming several. A filter that overlaps nothing is subscribed without one (reading an
  identifier has a cost per message, see :meth:`Routes.place`); a copy without identifier
  came through the one such filter its topic matches (:meth:`Routes.for_plain`).
- MQTT 3.1.1: the broker holds only pairwise-disjoint filters (bridge/broker_filters.py), so
  each message arrives once, and :meth:`Routes.for_topic` finds the listeners locally. While
  the broker's filters change, :class:`Echoes` drops the second copy a message can have.

A listener registered under two filters that both match a topic (a subscription whose filters
are being replaced after a token refresh) is still called once per message: through the
oldest of its matching filters only.

No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

from bridge.broker_filters import FilterTrie, matches, overlaps
from bridge.topic_index import TopicIndex

# MQTT 5 subscription identifiers are variable byte integers 1..268,435,455.
MAX_SUBSCRIPTION_ID = 268_435_455

Listener = Callable[..., None]


class Route:
    """One filter in use: the listeners sharing it, its age (``seq``), and its MQTT 5
    subscription identifier (``sid``). A filter that goes out of use and comes back is a new
    route with a new identifier, so a late copy sent for the old one reaches nobody."""

    __slots__ = ("filter", "listeners", "seq", "sid", "tagged")

    def __init__(self, filter_: str, seq: int) -> None:
        self.filter = filter_
        self.seq = seq
        self.sid = (seq - 1) % MAX_SUBSCRIPTION_ID + 1
        self.listeners: set[Listener] = set()
        # subscribed with its identifier (True), or without one (see Routes.place)
        self.tagged = True


class Routes:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}  # insertion order is age order
        self._by_sid: dict[int, Route] = {}
        self._index = TopicIndex()
        self._seq = 0
        self._of: dict[Listener, dict[str, Route]] = {}  # a listener's routes
        # listeners with two routes some topic matches: the only ones that need a check
        self._overlapping: set[Listener] = set()
        # identifier placement (MQTT 5), see place()
        self._held = FilterTrie()  # filters in use, or that the broker may still hold
        self._holds: dict[str, int] = {}  # how many of those per filter (a route, a leftover)
        self._leftovers: dict[str, int] = {}  # out of use, maybe still held: how many
        # filters held without identifier, with the route they serve (None: out of use),
        # until the copies they sent have all been handled
        self._plain: dict[str, Route | None] = {}
        self._plain_trie = FilterTrie()
        # filters whose broker state changes: last message number before it is settled
        self._settling: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[Route]:
        """Oldest first."""
        return iter(list(self._routes.values()))

    def get(self, filter_: str) -> Route | None:
        return self._routes.get(filter_)

    def by_sid(self, sid: int) -> Route | None:
        return self._by_sid.get(sid)

    def add(self, filter_: str, listener: Listener) -> Route | None:
        """Register ``listener`` under ``filter_``; the route if the filter is newly in use."""
        route = self._routes.get(filter_)
        new = route is None
        if route is None:
            self._seq += 1
            route = Route(filter_, self._seq)
            self._routes[filter_] = route
            self._by_sid[route.sid] = route
            self._index.add(filter_)
        if listener not in route.listeners:
            route.listeners.add(listener)
            mine = self._of.setdefault(listener, {})
            if any(overlaps(filter_, other) for other in mine):
                self._overlapping.add(listener)
            mine[filter_] = route
        return route if new else None

    def remove(self, filter_: str, listener: Listener) -> Route | None:
        """Unregister; the route if the filter is no longer in use by anyone."""
        route = self._routes.get(filter_)
        if route is None or listener not in route.listeners:
            return None
        route.listeners.discard(listener)
        mine = self._of.get(listener, {})
        mine.pop(filter_, None)
        if not mine:
            self._of.pop(listener, None)
        if listener in self._overlapping and not _any_overlap(list(mine)):
            self._overlapping.discard(listener)
        if route.listeners:
            return None
        del self._routes[filter_]
        if self._by_sid.get(route.sid) is route:
            del self._by_sid[route.sid]
        self._index.discard(filter_)
        return route

    # -- which routes need an identifier (MQTT 5) -----------------------------------------------
    # paho parses an identifier into its per-message Properties object at about 7 us a
    # message (measured), so only filters that overlap another carry one: the typical
    # dashboard (one device, or a few) overlaps nothing. The rule that makes this exact, for a
    # broker that sends a copy per subscription as for one that sends one copy naming all the
    # identifiers that matched: a filter held without identifier ("plain") never overlaps any
    # other filter the broker holds. A copy without identifier then came through the one
    # plain filter its topic matches, and a copy with identifiers through exactly those.
    def place(self, route: Route, now: int) -> list[Route]:
        """Decide how a new route is subscribed: plain if it overlaps no filter in use or
        still held, else with its identifier. Plain routes it overlaps take their
        identifiers too: the returned routes, to resubscribe *before* this one (a broker
        replaces a subscription of the same filter without losing or doubling messages).
        ``now``: the number of the last message handled."""
        self._prune(now)
        overlapped = self._held.overlapping(route.filter)
        route.tagged = bool(overlapped)
        converted: list[Route] = []
        for f in overlapped:
            other = self._routes.get(f)
            if other is not None and other is not route and not other.tagged:
                other.tagged = True  # its plain copies still in flight are still its own
                self._settling[f] = math.inf
                converted.append(other)
        converted.sort(key=lambda r: r.seq)
        self._hold(route.filter, 1)
        if not route.tagged:
            self._plain[route.filter] = route
            self._plain_trie.add(route.filter)
        return converted

    def unplace(self, route: Route) -> None:
        """``route`` went out of use: the broker may hold its filter a while longer (its
        place stays taken until :meth:`settled`)."""
        f = route.filter
        self._leftovers[f] = self._leftovers.get(f, 0) + 1  # the route's hold becomes one
        self._settling[f] = math.inf
        if self._plain.get(f) is route:
            self._plain[f] = None

    def settled(self, filter_: str, last: int) -> None:
        """The broker now holds ``filter_`` as the route in use says (or not at all); copies
        sent otherwise are all numbered ``last`` or lower."""
        current = self._settling.get(filter_)
        if current is not None:
            self._settling[filter_] = last if current == math.inf else max(current, last)

    def plain_again(self) -> None:
        """A new broker session holds nothing: decide every route afresh."""
        self._held, self._holds, self._leftovers = FilterTrie(), {}, {}
        self._plain, self._plain_trie, self._settling = {}, FilterTrie(), {}
        for route in self._routes.values():
            self._hold(route.filter, 1)
        for route in self._routes.values():
            route.tagged = any(f != route.filter for f in self._held.overlapping(route.filter))
            if not route.tagged:
                self._plain[route.filter] = route
                self._plain_trie.add(route.filter)

    def for_plain(self, topic: str) -> list[Listener]:
        """Listeners of a copy without identifier: sent through the one plain filter its
        topic matches (:meth:`for_copy` of that route)."""
        filters = self._plain_trie.match(topic)
        route = self._plain.get(filters[0]) if filters else None
        if route is None:
            return []  # out of use
        if not self._overlapping:
            return list(route.listeners)
        return self.for_copy([route], topic)

    def _hold(self, filter_: str, n: int) -> None:
        count = self._holds.get(filter_, 0) + n
        if count > 0:
            if filter_ not in self._holds:
                self._held.add(filter_)
            self._holds[filter_] = count
        else:
            self._holds.pop(filter_, None)
            self._held.discard(filter_)

    def _prune(self, now: int) -> None:
        for f, last in list(self._settling.items()):
            if last > now:
                continue  # copies it sent may still be waiting
            del self._settling[f]
            self._hold(f, -self._leftovers.pop(f, 0))
            if f in self._plain:
                route = self._plain[f]
                if route is None or route.tagged:
                    del self._plain[f]
                    self._plain_trie.discard(f)

    # -- delivery ------------------------------------------------------------------------------
    def for_copy(self, routes: Sequence[Route], topic: str) -> list[Listener]:
        """Listeners of one copy of a message on ``topic``, sent for ``routes`` (the
        subscriptions it names): each listener of them once, and a listener that holds an
        older route matching ``topic`` not at all (it gets the copy sent for that one)."""
        overlapping = self._overlapping
        if len(routes) == 1:
            listeners = routes[0].listeners
            if not overlapping:
                return list(listeners)
            return [
                ls
                for ls in listeners
                if ls not in overlapping or self._first(ls, topic) is routes[0]
            ]
        out: list[Listener] = []
        seen: set[Listener] = set()
        for route in routes:
            for ls in route.listeners:
                if ls in seen:
                    continue
                seen.add(ls)
                if ls not in overlapping or self._first(ls, topic) in routes:
                    out.append(ls)
        return out

    def for_topic(self, topic: str) -> list[Listener]:
        """Listeners of every filter in use that ``topic`` matches, each once (for a broker
        that sends each message once)."""
        filters = self._index.match(topic)
        if len(filters) == 1:
            route = self._routes.get(filters[0])
            return list(route.listeners) if route is not None else []
        out: list[Listener] = []
        seen: set[Listener] = set()
        for f in filters:
            route = self._routes.get(f)
            if route is None:
                continue
            for ls in route.listeners:
                if ls not in seen:
                    seen.add(ls)
                    out.append(ls)
        return out

    def _first(self, listener: Listener, topic: str) -> Route | None:
        """The oldest of ``listener``'s routes that ``topic`` matches."""
        best: Route | None = None
        for route in self._of.get(listener, {}).values():
            if (best is None or route.seq < best.seq) and matches(route.filter, topic):
                best = route
        return best


def _any_overlap(filters: list[str]) -> bool:
    return any(overlaps(a, b) for i, a in enumerate(filters) for b in filters[i + 1 :])


class Echoes:
    """Second copies of messages while the broker's (disjoint) filters are being replaced.

    Replacing broker filters means subscribing the new ones before unsubscribing the old (so
    nothing is missed); a message routed in between matches one of each and can come twice,
    identical. From :meth:`open` until every message that arrived before the last
    unsubscription was acknowledged has been handled (:meth:`close_after`), a message whose
    topic matches a replaced filter is let through once per (topic, payload). Messages are
    numbered in arrival order by the caller.
    """

    def __init__(self) -> None:
        self._filters = TopicIndex()
        self._until: float | None = None
        self._seen: set[tuple[str, Hashable]] = set()

    @property
    def active(self) -> bool:
        return self._until is not None

    def open(self, replaced: Sequence[str]) -> None:
        for f in replaced:
            self._filters.add(f)
        self._until = math.inf

    def close_after(self, number: int) -> None:
        """Messages numbered above ``number`` were sent after the change was complete."""
        if self._until is not None:
            self._until = number

    def repeat(self, number: int, topic: str, payload: Any) -> bool:
        """Whether message ``number`` is a second copy to drop."""
        if self._until is None:
            return False
        if number > self._until:
            self._filters, self._until, self._seen = TopicIndex(), None, set()
            return False
        if not self._filters.match(topic):
            return False
        key = (topic, bytes(payload))
        if key in self._seen:
            return True
        self._seen.add(key)
        return False
