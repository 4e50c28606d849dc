"""The frame each dialect's subscription gets for one stream event (docs/protocol.md, section 8)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bridge.dialects import live_frame
from bridge.subscription_set import Subscription
from bridge.subscriptions import Selector

SID = "sub_00000000000000aa"
READING = {
    "device_id": "d1",
    "metric": "temp",
    "value": 21.5,
    "unit": "C",
    "ts": "2026-01-01T00:00:00.000Z",
    "received_at": "2026-01-01T00:00:00.100Z",
}
ALERT = {
    "alert_id": 7,
    "rule_id": 3,
    "device_id": "d1",
    "metric": "temp",
    "severity": "critical",
    "title": "hot",
    "message": "temp above 80",
    "state": "active",
    "event": "created",
    "created_at": "2026-01-01T00:00:01.000Z",
    "updated_at": "2026-01-01T00:00:02.000Z",
}
STATUS = {
    "device_id": "d1",
    "old_status": "online",
    "new_status": "offline",
    "reason": "silent",
    "last_seen": "2026-01-01T00:00:00.000Z",
    "ts": "2026-01-01T00:05:00.000Z",
}
SYSTEM = {"component": "ingest", "status": "healthy", "cpu_usage": 3.0, "memory_usage": 40.0}
LOG = {"device_id": "d1", "level": "info", "message": "booted", "timestamp": "device-time"}

TELEMETRY_LEVELS = ("telemetry", "d1", "temp")
ALERT_LEVELS = ("alerts", "critical", "d1")
STATUS_LEVELS = ("status", "d1")
SYSTEM_LEVELS = ("system", "ingest")
LOG_LEVELS = ("logs", "d1")

CASES: list[tuple[str, str, str, tuple[str, ...], dict[str, Any], dict[str, Any]]] = [
    # dialect, label, channel, topic levels, event -> frame without its envelope timestamp
    (
        "channel",
        "",
        "telemetry",
        TELEMETRY_LEVELS,
        READING,
        {
            "type": "telemetry_update",
            "channel": "telemetry",
            "subscription_id": SID,
            "device_id": "d1",
            "telemetry": {
                "temp": {"value": 21.5, "unit": "C", "timestamp": "2026-01-01T00:00:00.000Z"}
            },
            "received_at": "2026-01-01T00:00:00.100Z",
        },
    ),
    (
        "channel",
        "",
        "alerts",
        ALERT_LEVELS,
        ALERT,
        {"type": "alert", "channel": "alerts", "subscription_id": SID}
        | ALERT
        | {"metadata": {}, "received_at": ALERT["updated_at"]},
    ),
    (
        "channel",
        "",
        "devices",
        STATUS_LEVELS,
        STATUS,
        {
            "type": "device_status_update",
            "channel": "devices",
            "subscription_id": SID,
            "device_id": "d1",
            "old_status": "online",
            "new_status": "offline",
            "reason": "silent",
            "metadata": {"last_seen": STATUS["last_seen"]},
            "received_at": STATUS["ts"],  # the resume point
        },
    ),
    (
        "channel",
        "",
        "system",
        SYSTEM_LEVELS,
        SYSTEM,
        {
            "type": "system_status_update",
            "channel": "system",
            "subscription_id": SID,
            "component": "ingest",
            "metrics": {"cpu_usage": 3.0, "memory_usage": 40.0},
        },
    ),
    (
        "channel",
        "",
        "logs",
        LOG_LEVELS,
        LOG,
        {
            "type": "log",
            "channel": "logs",
            "subscription_id": SID,
            "device_id": "d1",
            "level": "info",
            "message": "booted",
        },
    ),
    (
        "topics",
        "telemetry",
        "telemetry",
        TELEMETRY_LEVELS,
        READING,
        {"type": "event", "topic": "telemetry", "event": "telemetry_update", "data": READING},
    ),
    (
        "topics",
        "alerts",
        "alerts",
        ALERT_LEVELS,
        ALERT,
        {"type": "event", "topic": "alerts", "event": "alert_created", "data": {"id": 7} | ALERT},
    ),
    (
        "topics",
        "devices",
        "devices",
        STATUS_LEVELS,
        STATUS,
        {
            "type": "event",
            "topic": "devices",
            "event": "device_update",
            "data": {"id": "d1", "status": "offline", "last_seen": STATUS["last_seen"]}
            | {k: v for k, v in STATUS.items() if k != "last_seen"},
        },
    ),
    (
        "topics",
        "system",
        "system",
        SYSTEM_LEVELS,
        SYSTEM,
        {
            "type": "event",
            "topic": "system",
            "event": "system_status",
            "data": {
                "id": "ingest",
                "status": "healthy",
                "metrics": {"cpu_usage": 3.0, "memory_usage": 40.0},
                "component": "ingest",
            },
        },
    ),
    (
        "topics",
        "logs",
        "logs",
        LOG_LEVELS,
        LOG,
        {"type": "event", "topic": "logs", "event": "log", "data": LOG},
    ),
    (
        "events",
        "telemetry.updated",
        "telemetry",
        TELEMETRY_LEVELS,
        READING,
        {
            "type": "event",
            "eventType": "telemetry.updated",
            "data": READING | {"agentId": "d1", "metrics": {"temp": 21.5}},
        },
    ),
    (
        "events",
        "agent.status",
        "devices",
        STATUS_LEVELS,
        STATUS,
        {
            "type": "event",
            "eventType": "agent.status",
            "data": STATUS | {"agentId": "d1", "status": "offline"},
        },
    ),
    (
        "events",
        "alert.created",
        "alerts",
        ALERT_LEVELS,
        ALERT,
        {"type": "event", "eventType": "alert.created", "data": ALERT | {"agentId": "d1"}},
    ),
    (
        "events",
        "system.status",
        "system",
        SYSTEM_LEVELS,
        SYSTEM,
        {"type": "event", "eventType": "system.status", "data": SYSTEM},  # no device: no agentId
    ),
    (
        "o1-metrics",
        "billing",
        "telemetry",
        TELEMETRY_LEVELS,
        READING,
        {"type": "metrics", "host": "d1", "application": "billing", "temp": 21.5},
    ),
    (
        "o1-metrics",
        "",
        "system",
        SYSTEM_LEVELS,
        SYSTEM,
        {"type": "metrics", "host": "ingest", "application": None, "cpu": 3.0, "memory": 40.0},
    ),
    (
        "o1-logs",
        "",
        "logs",
        LOG_LEVELS,
        LOG,
        {"type": "log", "host": "d1", "device_id": "d1", "level": "info", "message": "booted"},
    ),
]


@pytest.mark.parametrize(
    ("dialect", "label", "channel", "levels", "event", "expected"),
    CASES,
    ids=[f"{c[0]}-{c[2]}" for c in CASES],
)
def test_live_frame(
    dialect: str,
    label: str,
    channel: str,
    levels: tuple[str, ...],
    event: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    sub = Subscription(SID, Selector(channel), (), dialect, label)
    frame = orjson.loads(live_frame(sub, levels, event))
    assert isinstance(frame.pop("timestamp"), str)  # the envelope's, never the event's
    assert frame == expected
