"""One client's subscriptions as data: what each is, its id, and where it resumes.

Pure: no awaits, no socket, no broker. A :class:`Subscription` is one ``subscribe`` of a
client in one of the seed dialects (docs/protocol.md, sections 7 and 8); its id is a hash of
its content, so equal subscriptions of different clients share their live frames
(``bridge/dialects.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.subscriptions import Selector


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
