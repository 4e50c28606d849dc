"""The front's counters and their Prometheus view.

Nothing here runs per delivered frame. The front counts in plain integers where things
happen (:class:`FrontStats` here, each client's ``OutboundQueue``, the hub; client message
handling times into :class:`LatencyHistogram` bucket lists);
:class:`FrontSnapshot` gathers them when ``/metrics`` is asked for (``HttpApi.snapshot``) and
:class:`FrontCollector` turns a snapshot into metric families. The names and labels are the
metric catalogue's (README, "Front metrics"); every label has a fixed, small set of values.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from bridge.session import Session

# Handling one client message: a ping takes microseconds, a query or a replay may wait on the
# database for seconds (the REST deadline is 8 s).
HANDLING_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class LatencyHistogram:
    """Counts per bucket in a plain int list (an observation is a bisect and two adds), read
    as a Prometheus histogram at scrape time. ``bounds`` are the buckets' upper bounds
    (inclusive, as Prometheus' ``le``); the last count is the +Inf bucket."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = HANDLING_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last."""
        out, total = [], 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


@dataclass
class FrontStats:
    """Plain counters, added to where things happen and read at scrape time (bridge.http_api,
    bridge.front_metrics). What each open session counts itself (messages received, errors,
    its queue's deliveries, conflations and drops) is added here when it closes."""

    started: float = field(default_factory=time.monotonic)
    current: int = 0
    peak: int = 0
    total: int = 0
    by_dialect: Counter[str] = field(default_factory=Counter)  # open now
    sent: int = 0
    received: int = 0
    delivered: int = 0
    conflated: int = 0
    dropped: int = 0
    slow_consumer_closes: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    auth_failures: Counter[str] = field(default_factory=Counter)  # by AuthError.reason
    errors: int = 0  # error replies to closed connections (open ones count their own)
    batches: int = 0  # writes of queued frames to a transport, each of one or more frames
    # how long handling a client's message took (ms), the most recent ones (o1's stats)
    handling_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    # the same, by message type (bridge.session.MESSAGE_TYPES or "other"), for Prometheus
    handling: dict[str, LatencyHistogram] = field(default_factory=dict)

    def handled(self, type_: str, seconds: float) -> None:
        self.handling_ms.append(seconds * 1000)
        histogram = self.handling.get(type_)
        if histogram is None:
            histogram = self.handling[type_] = LatencyHistogram()
        histogram.observe(seconds)

    def retire(self, session: Session) -> None:
        """Keep what a closing session counted. Called with no await before the session's
        ``close()`` marks it closed, which is when the scrape stops adding it up itself: a
        counter never goes back."""
        queue = session.queue
        self.received += session.received
        self.errors += session.errors
        self.delivered += queue.delivered
        self.conflated += queue.conflated
        self.dropped += queue.dropped


@dataclass(slots=True)
class FrontSnapshot:
    """The front's numbers at one scrape (counters are totals since the front started)."""

    connections: Mapping[str, int]  # open now, by dialect
    connections_total: int
    handshakes_refused: Mapping[str, int]  # by reason
    exports_refused: int
    auth_failures: Mapping[str, int]  # by reason
    subscriptions: Mapping[str, int]  # client subscriptions now, by channel
    broker_subscriptions: int
    broker_connected: bool
    broker_received: int
    deliveries: int
    sent: int
    received: int
    conflated: int
    dropped: int
    slow_closes: int
    handling: Mapping[str, LatencyHistogram] = field(default_factory=dict)  # by message type
    database_up: bool | None = None  # None: this front has no database


def _labelled(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Mapping[str, int],
    known: Iterable[str] = (),
) -> Metric:
    """A family with one sample per label value: every ``known`` value (0 until it happens,
    so ``rate()`` sees the first one), then any other value seen."""
    family = kind(name, documentation, labels=[label])
    for value in dict.fromkeys((*known, *values)):
        family.add_metric([value], values.get(value, 0))
    return family


class FrontCollector:
    """The front's metrics for Prometheus, built from one :class:`FrontSnapshot` per scrape.

    ``known`` lists, per label, the values shown even at 0 (dialects, refusal and auth
    failure reasons, channels)."""

    def __init__(
        self,
        snapshot: Callable[[], FrontSnapshot],
        known: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._known = {k: tuple(v) for k, v in (known or {}).items()}

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        known = self._known
        yield _labelled(
            GaugeMetricFamily,
            "bridge_connections",
            "WebSocket clients connected now, by dialect",
            "dialect",
            s.connections,
            known.get("dialect", ()),
        )
        yield CounterMetricFamily(
            "bridge_connections_accepted_total",
            "WebSocket clients accepted",
            value=s.connections_total,
        )
        yield _labelled(
            CounterMetricFamily,
            "bridge_handshakes_refused_total",
            "WebSocket handshakes refused, by reason",
            "reason",
            s.handshakes_refused,
            known.get("refusal", ()),
        )
        yield CounterMetricFamily(
            "bridge_exports_refused_total",
            "CSV exports refused over their concurrency budget",
            value=s.exports_refused,
        )
        yield _labelled(
            CounterMetricFamily,
            "bridge_auth_failures_total",
            "token checks that failed (handshake, auth message, REST), by reason",
            "reason",
            s.auth_failures,
            known.get("auth_failure", ()),
        )
        yield _labelled(
            GaugeMetricFamily,
            "bridge_subscriptions",
            "client subscriptions now, by channel",
            "channel",
            s.subscriptions,
            known.get("channel", ()),
        )
        yield GaugeMetricFamily(
            "bridge_broker_subscriptions",
            "MQTT filters the front holds at the broker",
            value=s.broker_subscriptions,
        )
        yield GaugeMetricFamily(
            "bridge_broker_connected",
            "1 while the front's broker connection is up",
            value=int(s.broker_connected),
        )
        yield CounterMetricFamily(
            "bridge_broker_messages_received_total",
            "messages received from the broker",
            value=s.broker_received,
        )
        yield CounterMetricFamily(
            "bridge_deliveries_total",
            "live update frames queued for clients (replies and replays not included)",
            value=s.deliveries,
        )
        yield CounterMetricFamily(
            "bridge_messages_sent_total", "frames written to clients", value=s.sent
        )
        yield CounterMetricFamily(
            "bridge_messages_received_total", "messages received from clients", value=s.received
        )
        yield CounterMetricFamily(
            "bridge_frames_conflated_total",
            "queued frames replaced by a newer value of the same reading before sending",
            value=s.conflated,
        )
        yield CounterMetricFamily(
            "bridge_frames_dropped_total",
            "frames dropped for clients that did not keep up",
            value=s.dropped,
        )
        yield CounterMetricFamily(
            "bridge_slow_clients_closed_total",
            "clients closed for being too slow (4008)",
            value=s.slow_closes,
        )
        handling = HistogramMetricFamily(
            "bridge_message_handling_seconds",
            "time to handle one client message, by message type",
            labels=["type"],
        )
        for type_, histogram in sorted(s.handling.items()):
            handling.add_metric([type_], histogram.buckets(), histogram.sum)
        yield handling
        if s.database_up is not None:
            yield GaugeMetricFamily(
                "bridge_database_up",
                "the front's database probe: 1 reachable, 0 down",
                value=int(s.database_up),
            )
