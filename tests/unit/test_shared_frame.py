"""A frame serialised once per message equals the one built per subscription."""

from typing import Any

import orjson
import pytest

from bridge.dialects import live_frame, shared_frame
from bridge.subscription_set import Subscription, device_of
from bridge.subscriptions import Selector

EVENTS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "telemetry": (
        ("telemetry", "d1", "temp"),
        {
            "device_id": "d1",
            "metric": "temp",
            "value": 21.5,
            "unit": "C",
            "ts": "2026-01-01T00:00:00.000Z",
            # a device-controlled string that looks like the placeholder must stay content
            "received_at": "\x00subscription_id\x00",
        },
    ),
    "alerts": (
        ("alerts", "critical", "d1"),
        {"alert_id": 7, "device_id": "d1", "severity": "critical", "title": "hot"},
    ),
    "devices": (
        ("status", "d1"),
        {"device_id": "d1", "old_status": "online", "new_status": "offline", "ts": "x"},
    ),
    "system": (("system", "ingest"), {"component": "ingest", "cpu_usage": 3.0}),
}


def _without_timestamp(frame: bytes) -> dict[str, Any]:
    msg: dict[str, Any] = orjson.loads(frame)
    msg.pop("timestamp")
    return msg


@pytest.mark.parametrize("channel", sorted(EVENTS))
@pytest.mark.parametrize("dialect", ["channel", "topics", "events"])
def test_shared_equals_per_subscription(channel: str, dialect: str) -> None:
    levels, event = EVENTS[channel]
    subs = [
        Subscription(f"sub_{i:016x}", Selector(channel), (), dialect, f"label{i % 2}")
        for i in range(4)
    ]
    frames: dict[Any, Any] = {}
    for sub in subs:
        shared = shared_frame(sub, levels, event, frames)
        assert _without_timestamp(shared) == _without_timestamp(live_frame(sub, levels, event))
    if dialect == "channel":
        ids = {
            orjson.loads(shared_frame(s, levels, event, frames))["subscription_id"] for s in subs
        }
        assert ids == {s.id for s in subs}


@pytest.mark.parametrize(
    ("levels", "device"),
    [
        (("telemetry", "d1", "temp"), "d1"),
        (("alerts", "critical", "d1"), "d1"),  # not the severity
        (("status", "d1"), "d1"),
        (("logs", "d1"), "d1"),
        (("system", "ingest"), None),
        (("alerts", "critical"), None),
    ],
)
def test_device_of_a_stream_topic(levels: tuple[str, ...], device: str | None) -> None:
    assert device_of(levels) == device


@pytest.mark.parametrize("dialect", ["channel", "topics", "o1-metrics"])
def test_system_frames_show_each_subscriptions_own_metrics(dialect: str) -> None:
    """Subscriptions that differ only in the `metrics` they show must not share a frame."""
    levels = ("system", "bridge-1")
    event = {"component": "bridge-1", "cpu_usage": 3.0, "memory_usage": 40.0, "disk_usage": 7.0}
    wanted = {
        "channel": [("cpu_usage",), ("memory_usage", "disk_usage"), None],
        "topics": [("cpu_usage",), ("memory_usage", "disk_usage"), None],
        "o1-metrics": [("cpu",), ("memory", "disk_usage"), None],
    }[dialect]
    subs = [
        Subscription(f"sub_{i:016x}", Selector("system", metrics=m), (), dialect, "system")
        for i, m in enumerate(wanted)
    ]
    frames: dict[Any, Any] = {}
    shown = []
    for sub in subs:
        frame = orjson.loads(shared_frame(sub, levels, event, frames))
        if dialect == "channel":
            shown.append(frame["metrics"])
        elif dialect == "topics":
            shown.append(frame["data"]["metrics"])
        else:
            shown.append(
                {
                    k: v
                    for k, v in frame.items()
                    if k not in ("type", "host", "application", "timestamp")
                }
            )
    if dialect == "o1-metrics":
        assert shown == [
            {"cpu": 3.0},
            {"memory": 40.0, "disk_usage": 7.0},
            {"cpu": 3.0, "memory": 40.0, "disk": 7.0},
        ]
    else:
        assert shown == [
            {"cpu_usage": 3.0},
            {"memory_usage": 40.0, "disk_usage": 7.0},
            {"cpu_usage": 3.0, "memory_usage": 40.0, "disk_usage": 7.0},
        ]


def test_one_subscription_shape_is_built_once_for_every_client_with_it() -> None:
    """Clients with the same subscription (same id: a hash of its content) share one frame
    object per message, and another subscription gets its own id in its frame."""
    levels, event = EVENTS["telemetry"]
    mine = Subscription("sub_00000000000000aa", Selector("telemetry"), (), "channel", "")
    same = Subscription("sub_00000000000000aa", Selector("telemetry"), (), "channel", "")
    other = Subscription("sub_00000000000000bb", Selector("telemetry"), (), "channel", "")
    frames: dict[Any, Any] = {}
    first = shared_frame(mine, levels, event, frames)
    assert shared_frame(same, levels, event, frames) is first
    assert orjson.loads(shared_frame(other, levels, event, frames))["subscription_id"] == other.id
    assert orjson.loads(first)["subscription_id"] == mine.id
