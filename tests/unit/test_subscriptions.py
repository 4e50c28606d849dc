"""Subscription -> MQTT filter translation: a table of cases, injection attempts included."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.auth import Principal
from bridge.subscriptions import (
    MAX_FILTERS,
    SubscriptionError,
    authorize,
    parse_channel_subscribe,
    parse_frequency,
)
from ingest.topics import Topics

ALL = Principal("alice", frozenset({"admin"}))
T = Topics("")


def filters_for(
    msg: dict[str, Any], principal: Principal = ALL, prefix: str = ""
) -> tuple[str, ...]:
    sel = parse_channel_subscribe(msg)
    authorize(sel, principal)
    return sel.mqtt_filters(Topics(prefix), principal)


CASES = [
    (
        {"channel": "telemetry", "device_id": "d1", "filters": {"metrics": ["temperature"]}},
        ("telemetry/d1/temperature",),
    ),
    (
        {"channel": "telemetry", "filters": {"metrics": ["temperature"]}},
        ("telemetry/+/temperature",),
    ),
    ({"channel": "telemetry", "device_id": "d1"}, ("telemetry/d1/+",)),
    ({"channel": "telemetry"}, ("telemetry/+/+",)),
    (
        {"channel": "telemetry", "device_id": ["d1", "d2"], "filters": {"metrics": ["a", "b"]}},
        ("telemetry/d1/a", "telemetry/d1/b", "telemetry/d2/a", "telemetry/d2/b"),
    ),
    ({"channel": "telemetry", "filters": {"device_id": "d9"}}, ("telemetry/d9/+",)),
    (
        {"channel": "alerts", "filters": {"severity": ["critical", "high"]}},
        ("alerts/critical/+", "alerts/high/+"),
    ),
    ({"channel": "alerts", "device_id": "d1"}, ("alerts/+/d1",)),
    ({"channel": "devices"}, ("status/+",)),
    ({"channel": "devices", "device_id": "d1"}, ("status/d1",)),
    ({"channel": "system"}, ("system/+",)),
    ({"channel": "logs", "device_id": "d1"}, ("logs/d1",)),
]


@pytest.mark.parametrize(("msg", "expected"), CASES)
def test_translation(msg: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert filters_for(msg) == expected


def test_prefix_is_applied() -> None:
    assert filters_for({"channel": "devices", "device_id": "d1"}, prefix="acme") == (
        "acme/status/d1",
    )


def test_long_lists_widen_to_one_level_and_filter_in_process() -> None:
    metrics = [f"m{i}" for i in range(MAX_FILTERS + 1)]
    msg = {"channel": "telemetry", "device_id": "d1", "filters": {"metrics": metrics}}
    assert filters_for(msg) == ("telemetry/d1/+",)
    sel = parse_channel_subscribe(msg)
    assert sel.accepts(ALL, "d1", {"metric": "m3"})
    assert not sel.accepts(ALL, "d1", {"metric": "other"})


def test_exact_devices_claim_narrows_an_all_devices_subscription() -> None:
    bob = Principal("bob", frozenset({"telemetry:read"}), devices=("d2", "d1"))
    assert filters_for({"channel": "telemetry"}, bob) == ("telemetry/d1/+", "telemetry/d2/+")


def test_glob_claim_subscribes_wide_and_filters_in_process() -> None:
    carol = Principal("carol", frozenset({"telemetry:read"}), devices=("plant-a-*",))
    sel = parse_channel_subscribe({"channel": "telemetry"})
    authorize(sel, carol)
    assert sel.mqtt_filters(T, carol) == ("telemetry/+/+",)
    assert sel.accepts(carol, "plant-a-7", {"metric": "t"})
    assert not sel.accepts(carol, "plant-b-7", {"metric": "t"})


INJECTIONS = ["+", "#", "a/b", "$SYS", "$share/x", "", "d1/#", "d+", "x\x00", "../d1", "d 1"]


@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize("where", ["device_id", "filters.device_id", "filters.metrics"])
def test_injection_attempts_are_422_and_never_reach_a_filter(bad: str, where: str) -> None:
    msg: dict[str, Any] = {"channel": "telemetry", "filters": {}}
    if where == "device_id":
        msg["device_id"] = bad
    elif where == "filters.device_id":
        msg["filters"]["device_id"] = [bad]
    else:
        msg["filters"]["metrics"] = [bad]
    with pytest.raises(SubscriptionError) as err:
        parse_channel_subscribe(msg)
    assert err.value.code == 422 and err.value.error == "validation_error"


@pytest.mark.parametrize(
    "msg",
    [
        {"channel": "nope"},
        {},
        {"channel": "telemetry", "filters": []},
        {"channel": "telemetry", "filters": {"frequency": "fast"}},
        {"channel": "telemetry", "filters": {"frequency": "10ms"}},
        {"channel": "alerts", "filters": {"severity": ["urgent"]}},
        {"channel": "devices", "filters": {"status_types": ["sleeping"]}},
        {"channel": "telemetry", "snapshot": "yes"},
        {"channel": "telemetry", "filters": {"min_value": "3"}},
        {"channel": "telemetry", "device_id": 42},
        {"channel": "telemetry", "device_id": ["d"] * 1001},
    ],
)
def test_invalid_subscriptions(msg: dict[str, Any]) -> None:
    with pytest.raises(SubscriptionError) as err:
        parse_channel_subscribe(msg)
    assert err.value.code == 422


def test_forbidden_scope_and_device() -> None:
    reader = Principal("r", frozenset({"alerts:read"}), devices=("d1",))
    with pytest.raises(SubscriptionError) as err:
        authorize(parse_channel_subscribe({"channel": "telemetry"}), reader)
    assert err.value.code == 403
    with pytest.raises(SubscriptionError) as err:
        authorize(parse_channel_subscribe({"channel": "alerts", "device_id": "d2"}), reader)
    assert err.value.code == 403
    authorize(parse_channel_subscribe({"channel": "alerts", "device_id": "d1"}), reader)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("real-time", 0.0), (None, 0.0), ("500ms", 0.5), ("5s", 5.0), ("1m", 60.0), ("1h", 3600.0)],
)
def test_frequency(value: str | None, seconds: float) -> None:
    assert parse_frequency(value) == seconds


def test_value_filters_and_statuses_in_process() -> None:
    sel = parse_channel_subscribe(
        {"channel": "telemetry", "filters": {"min_value": 10, "max_value": 20}}
    )
    assert sel.accepts(ALL, "d1", {"metric": "t", "value": 15})
    assert not sel.accepts(ALL, "d1", {"metric": "t", "value": 25})
    dev = parse_channel_subscribe({"channel": "devices", "filters": {"status_types": ["offline"]}})
    assert dev.accepts(ALL, "d1", {"new_status": "offline"})
    assert not dev.accepts(ALL, "d1", {"new_status": "online"})


# -- every filter applied or refused (never accepted and ignored) ---------------------------------

APPLIES = [
    # (channel, filters, event that passes, event that does not)
    ("alerts", {"metrics": ["t"]}, {"metric": "t"}, {"metric": "p"}),
    ("alerts", {"alert_type": ["t"]}, {"metric": "t"}, {"metric": "p"}),
    ("logs", {"application": "Anvil"}, {"application": "Anvil"}, {"application": None}),
    ("logs", {"level": ["ERROR"]}, {"level": "ERROR"}, {"level": "INFO"}),
    ("logs", {"search": "disk"}, {"message": "Disk full"}, {"message": "cpu"}),
    ("devices", {"status_types": ["offline"]}, {"new_status": "offline"}, {"new_status": "x"}),
    ("telemetry", {"min_value": 1}, {"metric": "t", "value": 2}, {"metric": "t", "value": 0}),
]


@pytest.mark.parametrize(("channel", "filters", "passes", "fails"), APPLIES)
def test_filters_apply(
    channel: str, filters: dict[str, Any], passes: dict[str, Any], fails: dict[str, Any]
) -> None:
    sel = parse_channel_subscribe({"channel": channel, "filters": filters})
    assert sel.accepts(ALL, "d1", passes) and not sel.accepts(ALL, "d1", fails)


@pytest.mark.parametrize(
    ("msg", "named"),
    [
        ({"channel": "alerts", "filters": {"frequency": "5s"}}, "frequency"),
        ({"channel": "devices", "frequency": "5s"}, "frequency"),
        ({"channel": "logs", "filters": {"frequency": "5s"}}, "frequency"),
        ({"channel": "devices", "filters": {"metrics": ["t"]}}, "metrics"),
        ({"channel": "logs", "filters": {"metrics": ["t"]}}, "metrics"),
        ({"channel": "telemetry", "filters": {"severity": ["high"]}}, "severity"),
        ({"channel": "telemetry", "filters": {"search": "x"}}, "search"),
        ({"channel": "alerts", "filters": {"application": "x"}}, "application"),
        ({"channel": "system", "filters": {"min_value": 1}}, "min_value"),
        ({"channel": "telemetry", "filters": {"nonsense": 1}}, "nonsense"),
        ({"channel": "telemetry", "nonsense": 1}, "nonsense"),
        ({"channel": "telemetry", "metrics": ["a"], "filters": {"metrics": ["b"]}}, "twice"),
        ({"channel": "system", "snapshot": True}, "snapshot"),
        ({"channel": "logs", "snapshot": True}, "snapshot"),
    ],
)
def test_filters_that_cannot_apply_are_refused(msg: dict[str, Any], named: str) -> None:
    with pytest.raises(SubscriptionError) as err:
        parse_channel_subscribe(msg)
    assert err.value.code == 422 and named in err.value.message


@pytest.mark.parametrize(
    ("msg", "field", "value"),
    [
        ({"channel": "alerts", "severity": ["high"]}, "severities", ("high",)),  # spread
        ({"channel": "telemetry", "metrics": ["t"]}, "metrics", ("t",)),
        ({"channel": "telemetry", "frequency": "5s"}, "interval_s", 5.0),
        ({"channel": "system", "filters": {"frequency": "30s"}}, "interval_s", 30.0),
        ({"channel": "telemetry", "filters": {"agentId": "a1"}}, "devices", ("a1",)),
        ({"channel": "telemetry", "filters": {"devices": ["a1"]}}, "devices", ("a1",)),
        (
            {"channel": "telemetry", "device_id": "a1", "filters": {"device_id": "a1"}},
            "devices",
            ("a1",),
        ),
        ({"channel": "telemetry", "filters": {"value_min": 2}}, "value_min", 2.0),
        # real-time asks for every message: what an event channel does anyway
        ({"channel": "alerts", "filters": {"frequency": "real-time"}}, "interval_s", 0.0),
        ({"channel": "logs", "frequency": "real-time"}, "interval_s", 0.0),
    ],
)
def test_filters_at_the_top_level_and_aliases(msg: dict[str, Any], field: str, value: Any) -> None:
    assert getattr(parse_channel_subscribe(msg), field) == value
