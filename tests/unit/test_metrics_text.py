"""The Prometheus text of /metrics keeps the names dashboards query."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.connection import FrontStats
from bridge.front_config import FrontConfig
from bridge.http_api import HttpApi


def test_prometheus_names_and_values() -> None:
    hub = SimpleNamespace(subscriptions=lambda: ["a", "b"], received=3, connected=asyncio.Event())
    stats = FrontStats(current=2, total=5, sent=7, received=4, dropped=1)
    api = HttpApi(FrontConfig(), stats, hub, set(), None, None, None, None)  # type: ignore[arg-type]
    text = generate_latest(api.registry).decode()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples == {
        "bridge_connections": 2,
        "bridge_connections_total": 5,
        "bridge_messages_sent_total": 7,
        "bridge_messages_received_total": 4,
        "bridge_messages_dropped_total": 1,
        "bridge_broker_subscriptions": 2,
    }
    assert "# TYPE bridge_connections gauge" in text
    assert "# TYPE bridge_connections_total counter" in text
