"""Property-based tests of the parsers that see untrusted input: any input gives a valid result
or the parser's own clear error, never another exception, never a topic wider than asked."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.auth import Principal
from bridge.subscriptions import MAX_FILTERS, SubscriptionError, parse_channel_subscribe
from ingest import names
from ingest.payload import PayloadError, parse_telemetry
from ingest.storable import text_problem
from ingest.topics import Topics
from storage.query_spec import QueryError, TelemetryQuery, parse_query

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Strings that look like what attackers and careless clients send.
nasty_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["+", "#", "/", "a/b", "a+", "$SYS", "..", "", " ", "\x00", "é", "a" * 65]),
    st.from_regex(names.DEVICE_ID_PATTERN, fullmatch=True),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(nasty_text, inner, max_size=6)
    ),
    max_leaves=30,
)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return b"{}"  # orjson refuses some inputs (e.g. huge ints); not the parser's job


# Well-formed readings whose unit is nasty: only the unit decides whether they are refused.
unit_payloads = st.dictionaries(
    st.sampled_from(["t", "x.y", "_z"]),
    st.fixed_dictionaries({"value": st.floats(allow_nan=False), "unit": nasty_text}),
    min_size=1,
    max_size=3,
)


@SETTINGS
@given(st.one_of(st.binary(max_size=300), json_values.map(_dumps), unit_payloads.map(_dumps)))
def test_payload_parser_accepts_or_explains(payload: bytes) -> None:
    try:
        readings = parse_telemetry("dev-1", payload, NOW)
    except PayloadError as exc:
        assert exc.reason and str(exc)
        return
    for r in readings:
        assert names.is_metric(r.metric) and math.isfinite(r.value)
        assert r.unit is None or text_problem(r.unit) is None  # PostgreSQL can store it
        assert NOW - timedelta(days=30) <= r.ts <= NOW + timedelta(hours=1)


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "metrics",
                "severity",
                "device_id",
                "frequency",
                "status_types",
                "alert_type",
                "search",
                "value_min",
                "value_max",
                "x",
            ]
        ),
        json_values,
        max_size=4,
    ),
    st.sampled_from(["telemetry", "alerts", "devices", "system", "logs"]),
    json_values,
)
def test_subscription_translation_is_never_wider_than_asked(
    filters: dict[str, Any], channel: str, device: Any
) -> None:
    msg: dict[str, Any] = {"type": "subscribe", "channel": channel, "filters": filters}
    if device is not None:
        msg["device_id"] = device
    try:
        selector = parse_channel_subscribe(msg)
    except SubscriptionError as exc:
        assert exc.code in (403, 422)
        return
    topics = Topics("p")
    for principal in (
        Principal("a", frozenset({"admin"})),
        Principal("b", frozenset({"admin"}), devices=("dev-1", "dev-2")),
    ):
        for f in selector.mqtt_filters(topics, principal):
            levels = f.split("/")
            assert levels[0] == "p" and "#" not in levels, f
            assert all(level == "+" or "+" not in level for level in levels), f
            device_level = {"telemetry": 2, "alerts": 3, "devices": 2, "logs": 2}.get(channel)
            if device_level is None:
                continue
            wanted = selector.devices
            if wanted is None and not principal.all_devices:
                wanted = tuple(principal.exact_devices)
            if wanted is not None and len(wanted) <= MAX_FILTERS // 2:
                # a request naming devices only ever subscribes to those devices
                assert levels[device_level] in wanted, (f, wanted)


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "device_id",
                "metric",
                "from",
                "to",
                "bucket",
                "agg",
                "fill",
                "limit",
                "cursor",
                "source",
                "format",
                "other",
            ]
        ),
        json_values,
        max_size=8,
    )
)
def test_query_parameters_parse_or_explain(params: dict[str, Any]) -> None:
    try:
        query = parse_query(params, NOW)
    except QueryError as exc:
        assert str(exc)
        return
    assert isinstance(query, TelemetryQuery)
    assert query.start < query.end and all(names.is_device_id(d) for d in query.devices)
    if query.bucket is not None:
        assert (query.end - query.start) / query.bucket <= 10_000
