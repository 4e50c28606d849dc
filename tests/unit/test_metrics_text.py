"""The Prometheus text of /metrics: the catalogue's names, types and labels, with the values
the front counted."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.auth import AUTH_FAILURE_REASONS
from bridge.connection import FrontStats
from bridge.front_config import FrontConfig
from bridge.front_metrics import LatencyHistogram
from bridge.handshake import DIALECTS, REFUSAL_REASONS
from bridge.http_api import HttpApi
from bridge.registry import SCHEMAS
from bridge.session import MESSAGE_TYPES, REGISTRY
from bridge.subscriptions import CHANNELS

CATALOGUE = {
    "bridge_connections": ("gauge", {"dialect"}),
    "bridge_connections_accepted_total": ("counter", set()),
    "bridge_handshakes_refused_total": ("counter", {"reason"}),
    "bridge_auth_failures_total": ("counter", {"reason"}),
    "bridge_subscriptions": ("gauge", {"channel"}),
    "bridge_broker_subscriptions": ("gauge", set()),
    "bridge_broker_connected": ("gauge", set()),
    "bridge_broker_messages_received_total": ("counter", set()),
    "bridge_deliveries_total": ("counter", set()),
    "bridge_messages_sent_total": ("counter", set()),
    "bridge_messages_received_total": ("counter", set()),
    "bridge_frames_conflated_total": ("counter", set()),
    "bridge_frames_dropped_total": ("counter", set()),
    "bridge_slow_clients_closed_total": ("counter", set()),
    "bridge_message_handling_seconds": ("histogram", {"type"}),
    "bridge_database_up": ("gauge", set()),
    # not in the catalogue's front table: CSV exports refused (they are no handshakes)
    "bridge_exports_refused_total": ("counter", set()),
}


def front_text(stats: FrontStats, *, database: bool | None = True) -> str:
    connected = asyncio.Event()
    connected.set()
    hub = SimpleNamespace(subscriptions=lambda: {"a": 1, "b": 1}, received=3, connected=connected)
    check = None if database is None else (lambda: database)
    api = HttpApi(FrontConfig(), stats, hub, set(), None, check, None, None)  # type: ignore[arg-type]
    return generate_latest(api.registry).decode()


def counted_stats() -> FrontStats:
    stats = FrontStats(current=2, total=5, sent=7, received=4, delivered=6, conflated=2, dropped=1)
    stats.by_dialect.update({"valtronics": 1, "nexus": 1})
    stats.slow_consumer_closes = 1
    stats.refused.update({"origin": 2, "export": 1})
    stats.auth_failures.update({"expired": 3})
    stats.handled("ping", 0.0002)
    stats.handled("ping", 0.003)
    stats.handled("other", 20.0)
    return stats


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_the_catalogue_names_types_and_labels() -> None:
    text = front_text(counted_stats())
    # the parser names a counter family without its _total (so bridge_connections twice)
    by_name = {
        (f"{f.name}_total" if f.type == "counter" else f.name): f
        for f in text_string_to_metric_families(text)
    }
    assert set(by_name) == set(CATALOGUE)
    for name, (type_, labels) in CATALOGUE.items():
        family = by_name[name]
        assert family.type == type_, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    assert "# TYPE bridge_connections gauge" in text
    assert "# TYPE bridge_connections_accepted_total counter" in text


def test_values_as_counted() -> None:
    samples = samples_of(front_text(counted_stats()))
    assert samples[("bridge_connections", (("dialect", "valtronics"),))] == 1
    assert samples[("bridge_connections", (("dialect", "nexus"),))] == 1
    assert samples[("bridge_connections", (("dialect", "o1"),))] == 0  # known: shown at 0
    assert samples[("bridge_connections_accepted_total", ())] == 5
    assert samples[("bridge_handshakes_refused_total", (("reason", "origin"),))] == 2
    assert samples[("bridge_handshakes_refused_total", (("reason", "capacity"),))] == 0
    assert ("bridge_handshakes_refused_total", (("reason", "export"),)) not in samples
    assert samples[("bridge_exports_refused_total", ())] == 1
    assert samples[("bridge_auth_failures_total", (("reason", "expired"),))] == 3
    assert samples[("bridge_auth_failures_total", (("reason", "invalid_signature"),))] == 0
    assert samples[("bridge_subscriptions", (("channel", "telemetry"),))] == 0
    assert samples[("bridge_broker_subscriptions", ())] == 2
    assert samples[("bridge_broker_connected", ())] == 1
    assert samples[("bridge_broker_messages_received_total", ())] == 3
    assert samples[("bridge_deliveries_total", ())] == 6
    assert samples[("bridge_messages_sent_total", ())] == 7
    assert samples[("bridge_messages_received_total", ())] == 4
    assert samples[("bridge_frames_conflated_total", ())] == 2
    assert samples[("bridge_frames_dropped_total", ())] == 1
    assert samples[("bridge_slow_clients_closed_total", ())] == 1
    assert samples[("bridge_database_up", ())] == 1
    ping = (("type", "ping"),)
    assert samples[("bridge_message_handling_seconds_count", ping)] == 2
    assert math.isclose(samples[("bridge_message_handling_seconds_sum", ping)], 0.0032)
    assert samples[("bridge_message_handling_seconds_bucket", (("le", "0.00025"), *ping))] == 1
    assert samples[("bridge_message_handling_seconds_bucket", (("le", "0.0025"), *ping))] == 1
    assert samples[("bridge_message_handling_seconds_bucket", (("le", "0.005"), *ping))] == 2
    other = (("le", "+Inf"), ("type", "other"))
    assert samples[("bridge_message_handling_seconds_bucket", other)] == 1
    assert samples[("bridge_message_handling_seconds_bucket", (("le", "10.0"), other[1]))] == 0


def test_every_label_value_is_from_a_fixed_set() -> None:
    samples = samples_of(front_text(counted_stats()))
    assert {dict(k[1])["dialect"] for k in samples if k[0] == "bridge_connections"} == set(DIALECTS)
    assert {dict(k[1])["channel"] for k in samples if k[0] == "bridge_subscriptions"} == set(
        CHANNELS
    )
    refused = {dict(k[1])["reason"] for k in samples if k[0] == "bridge_handshakes_refused_total"}
    assert refused == set(REFUSAL_REASONS)
    failures = {dict(k[1])["reason"] for k in samples if k[0] == "bridge_auth_failures_total"}
    assert failures == set(AUTH_FAILURE_REASONS)


def test_no_database_no_database_gauge() -> None:
    text = front_text(FrontStats(), database=None)
    assert "bridge_database_up" not in text
    assert "bridge_database_up 0.0" in front_text(FrontStats(), database=False)


def test_histogram_buckets_are_inclusive_upper_bounds() -> None:
    h = LatencyHistogram((0.1, 1.0))
    for value in (0.1, 0.5, 1.0, 1.5):
        h.observe(value)
    assert h.buckets() == [("0.1", 1), ("1.0", 3), ("+Inf", 4)]
    assert h.count == 4 and h.sum == 3.1


def test_message_types_are_the_handlers() -> None:
    assert set(SCHEMAS) == MESSAGE_TYPES and all(t in REGISTRY for t in MESSAGE_TYPES)
