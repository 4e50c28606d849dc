"""The front's Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class FrontCollector:
    """The front's counters for Prometheus, read from the same numbers as the JSON /metrics
    at scrape time (nothing is counted twice). The names are what dashboards query."""

    def __init__(self, metrics: Callable[[], dict[str, Any]]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics()
        connections, messages = m["connections"], m["messages"]
        yield GaugeMetricFamily(
            "bridge_connections", "WebSocket clients connected now", value=connections["current"]
        )
        yield CounterMetricFamily(
            "bridge_connections_total", "WebSocket clients accepted", value=connections["total"]
        )
        yield CounterMetricFamily(
            "bridge_messages_sent_total", "messages sent to clients", value=messages["sent"]
        )
        yield CounterMetricFamily(
            "bridge_messages_received_total",
            "messages received from clients",
            value=messages["received"],
        )
        yield CounterMetricFamily(
            "bridge_messages_dropped_total",
            "messages dropped for clients that did not keep up",
            value=messages["dropped"],
        )
        yield GaugeMetricFamily(
            "bridge_broker_subscriptions",
            "MQTT subscriptions held at the broker",
            value=m["broker"]["subscriptions"],
        )
