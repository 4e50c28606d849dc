"""One client's subscriptions as data: what each is, its id, where it resumes, and the set of
them with the counts the front reads often.

Pure: no awaits, no socket, no broker. A :class:`Subscription` is one ``subscribe`` of a
client in one of the seed dialects (docs/protocol.md, sections 7 and 8); its id is a hash of
its content, so equal subscriptions of different clients share their live frames
(``bridge/dialects.py``). :class:`SubscriptionSet` holds a client's subscriptions by id, the
live messages parked while their replays run, and which ones an ``unsubscribe`` names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.auth import Principal
from bridge.protocol import ClientError
from bridge.subscriptions import CHANNELS, Selector, SubscriptionError, authorize, parse_devices

Levels = tuple[str, ...]  # a stream topic's levels after the prefix: ("telemetry", d, m)
Event = dict[str, Any]


@dataclass
class Subscription:
    id: str
    selector: Selector
    filters: tuple[str, ...]
    dialect: str  # channel | topics | events | o1-metrics | o1-logs
    label: str  # the channel, topic or event type the client named
    listener: Callable[..., None] | None = None
    # frequency-limited subscriptions: the latest event per stream topic (levels) until the flush
    pending: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)
    # While a `since` replay reads storage, live messages wait here (then deduplicated).
    held: list[tuple[tuple[str, ...], dict[str, Any]]] | None = None
    # After a replay: replayed messages whose live copy may still be on its way, dropped
    # when it arrives (until the deadline).
    replayed: set[tuple[Any, ...]] | None = None
    replayed_until: float = 0.0
    next_flush: float = 0.0
    # Resume point of the last live message delivered (received_at / updated_at / ts), or the
    # time the subscription was made: where a replay starts after the broker link was cut.
    resume_point: Any = None
    replay_again: bool = False
    # A subscription made together with another one, whose id the client was given (o1's
    # subscribe-metrics: the device's readings and the bridge's system status): it goes when
    # that one is unsubscribed.
    parent: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "subscription_id": self.id,
            "channel": self.selector.channel,
            "dialect": self.dialect,
            "name": self.label,
            "mqtt_topics": list(self.filters),
            "devices": list(self.selector.devices or []),
            "metrics": list(self.selector.metrics or []),
            "frequency_s": self.selector.interval_s,
        }

    def wants(self, principal: Principal, levels: Levels, event: Event) -> bool:
        """Whether a live stream message is for this subscription under ``principal``'s claim."""
        if not self.selector.accepts(principal, device_of(levels), event):
            return False
        if levels[0] == "system" and self.selector.devices is not None:
            if event.get("component") not in self.selector.devices:
                return False
        if levels[0] == "alerts" and self.dialect == "events" and event.get("event"):
            if self.label != f"alert.{event.get('event')}":
                return False
        return True

    def advance(self, levels: Levels, event: Event) -> None:
        """A message was delivered: a resumable subscription resumes after it."""
        if self.resume_point is not None:
            self.resume_point = event.get(RESUME_FIELD.get(levels[0], "ts")) or self.resume_point

    def conflation_key(self, levels: Levels) -> tuple[str, ...] | None:
        """Queued readings of one (device, metric) replace each other; other messages queue."""
        return (self.id, levels[1], levels[2]) if levels[0] == "telemetry" else None


def subscription_id(selector: Selector, dialect: str, label: str) -> str:
    canonical = orjson.dumps([dialect, label, repr(selector)])
    return "sub_" + hashlib.sha1(canonical, usedforsecurity=False).hexdigest()[:16]


def device_of(levels: tuple[str, ...]) -> str | None:
    """The device a stream topic is about: ``alerts/{severity}/{device}``, ``system/...``
    (none) and ``{kind}/{device}/...`` for the rest. Filters and token claims are checked
    against it, so it must never be another level (a severity is not a device)."""
    if levels[0] == "system":
        return None
    if levels[0] == "alerts":
        return levels[2] if len(levels) > 2 else None
    return levels[1] if len(levels) > 1 else None


# The field of a stream event that `since` compares with (see History.replay).
RESUME_FIELD = {"telemetry": "received_at", "alerts": "updated_at", "status": "ts"}
RESUMABLE_CHANNELS = ("telemetry", "alerts", "devices")


class SubscriptionSet(dict[str, Subscription]):
    """A client's subscriptions by id.

    Reads are the dict's own: the live listener looks its subscription up for every message,
    at C speed. Changes go through :meth:`add` and :meth:`discard`, which keep the count of
    frequency-limited subscriptions; ``held`` counts the live messages parked across this
    client's running replays (bounded by the front's ``replay_max``).
    """

    __slots__ = ("_interval_subs", "held")

    def __init__(self) -> None:
        super().__init__()
        self._interval_subs = 0
        self.held = 0  # live messages held across this client's running replays

    def add(self, sub: Subscription) -> None:
        self[sub.id] = sub
        self._count_intervals()

    def discard(self, sub_id: str) -> None:
        self.pop(sub_id, None)
        self._count_intervals()

    @property
    def has_intervals(self) -> bool:
        """Whether a subscription asked for a frequency (the ticker flushes only those). Kept
        as a flag: the ticker asks every connection ten times a second, and computing it each
        time was 4% of the front's CPU at 1,000 clients (py-spy)."""
        return self._interval_subs > 0

    def _count_intervals(self) -> None:
        self._interval_subs = sum(1 for s in self.values() if s.selector.interval_s)

    def due(self, now: float) -> Iterator[tuple[Subscription, dict[Levels, Event]]]:
        """Frequency-limited subscriptions whose interval is over, each with the latest
        event per stream topic since its last flush (taken: the next interval starts empty)."""
        for sub in self.values():
            interval = sub.selector.interval_s
            if not interval or now < sub.next_flush:
                continue
            sub.next_flush = now + interval
            pending, sub.pending = sub.pending, {}
            yield sub, pending

    def hold(self, sub: Subscription, levels: Levels, event: Event, limit: int) -> bool:
        """Park a live message until ``sub``'s replay is done; False (not parked) when
        ``limit`` messages wait already."""
        assert sub.held is not None
        if self.held >= limit:
            return False
        sub.held.append((levels, event))
        self.held += 1
        return True

    def release_held(self, sub: Subscription) -> list[tuple[Levels, Event]]:
        held, sub.held = sub.held or [], None
        self.held -= len(held)
        return held

    def withdraw(self, principal: Principal) -> list[tuple[Subscription, SubscriptionError]]:
        """Take out the subscriptions a refreshed ``principal`` could not make now, and drop
        waiting latest values it may not see (the caller releases the withdrawn ones at the
        broker; see ``Session._withdraw``)."""
        ended = []
        for sub in list(self.values()):
            try:
                authorize(sub.selector, principal)
            except SubscriptionError as exc:
                # what it held is given back to the connection's count; the listener of a
                # subscription out of the set takes nothing more (a running replay of it
                # releases an empty list)
                self.release_held(sub)
                sub.held = []
                del self[sub.id]
                ended.append((sub, exc))
                continue
            # Latest values waiting for a frequency flush were accepted under the old claim.
            if sub.pending:
                sub.pending = {
                    k: v
                    for k, v in sub.pending.items()
                    if (device := device_of(k)) is None or principal.sees(device)
                }
        self._count_intervals()
        return ended

    def named_by(self, msg: dict[str, Any]) -> list[Subscription]:
        """What an ``unsubscribe`` names. By ``subscription_id`` (o1: ``subscriptionId``): that
        one (with the ones made together with it); by ``topics`` or ``events``: those named;
        by ``channel``: that channel's subscriptions, or with ``device_id`` those naming only
        devices among the ones given. Empty when it names none that exist."""
        sub_id = msg.get("subscription_id", msg.get("subscriptionId"))
        if sub_id is not None:
            if not isinstance(sub_id, str) or sub_id not in self:
                raise ClientError(404, "not_found", "no such subscription")
            return [self[sub_id], *(s for s in self.values() if s.parent == sub_id)]
        if "topics" in msg or "events" in msg:
            dialect = "topics" if "topics" in msg else "events"
            wanted = msg.get(dialect)
            if not isinstance(wanted, list):
                raise ClientError(422, "validation_error", f"{dialect} must be a list")
            return [s for s in self.values() if s.dialect == dialect and s.label in wanted]
        if "channel" in msg:
            return self._on_channel(msg)
        raise ClientError(
            422, "validation_error", "name a subscription_id, channel, topics or events"
        )

    def _on_channel(self, msg: dict[str, Any]) -> list[Subscription]:
        channel = msg.get("channel")
        if channel not in CHANNELS:
            raise ClientError(
                422, "validation_error", f"channel must be one of {', '.join(CHANNELS)}"
            )
        filters = msg.get("filters") or {}
        if not isinstance(filters, dict):
            raise ClientError(422, "validation_error", "filters must be an object")
        devices = parse_devices(msg.get("device_id", filters.get("device_id")))
        subs = [
            s for s in self.values() if s.dialect == "channel" and s.selector.channel == channel
        ]
        if devices is None:
            return subs
        wanted = set(devices)
        named = [s for s in subs if s.selector.devices is not None]
        partly = [
            s.id
            for s in named
            if wanted & set(s.selector.devices or ())
            and not set(s.selector.devices or ()) <= wanted
        ]
        if partly:
            raise ClientError(
                422,
                "validation_error",
                f"subscription {', '.join(partly)} also covers other devices: unsubscribe it "
                "by subscription_id, or name all its devices",
            )
        return [s for s in named if set(s.selector.devices or ()) <= wanted]
