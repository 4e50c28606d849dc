"""A stream message is the same message live, replayed (``since``) and in a snapshot.

Each case builds one reading, status change or alert through every path that shapes it: the
ingest's live publishing, the front's replay from storage and its snapshot, and compares.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson

from bridge.history import replay_events
from bridge.snapshot import snapshot_events
from ingest.rules import Alert
from ingest.service import stream_readings
from ingest.topics import Topics
from ingest.wire import ReadingTemplates, alert_event, status_event
from storage.devices import StatusChange
from storage.readings import READING_COLUMNS

TS = datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)
# received in the middle of a millisecond: a resume point must keep all six digits
RECEIVED = datetime(2026, 1, 1, 12, 0, 1, 123_456, tzinfo=UTC)


def test_a_reading_is_one_event_live_replayed_and_in_a_snapshot() -> None:
    topics = Topics("site-a")
    row = ("dev-1", "temperature", TS, 21.5, "°C", RECEIVED)
    [(topic, payload)] = stream_readings([row], None, ReadingTemplates(topics.telemetry))
    live = orjson.loads(payload)

    stored = dict(zip(READING_COLUMNS, row, strict=True))  # a readings / latest_values row
    [(replay_levels, replayed)] = replay_events("telemetry", [stored])
    [(snapshot_levels, snapshot)] = snapshot_events("telemetry", [stored])

    assert live == replayed == snapshot
    assert live["received_at"] == "2026-01-01T12:00:01.123456Z"
    assert live["ts"] == "2026-01-01T12:00:00.250Z"
    assert replay_levels == snapshot_levels == ("telemetry", "dev-1", "temperature")
    assert topic == topics.telemetry("dev-1", "temperature")


def test_a_redelivered_reading_is_not_published_again() -> None:
    row = ("dev-1", "temperature", TS, 21.5, None, RECEIVED)
    templates = ReadingTemplates(Topics("").telemetry)
    assert stream_readings([row], frozenset(), templates) == []


def test_a_status_change_is_one_event_live_and_replayed() -> None:
    change = StatusChange("dev-1", "offline", "online", "data received", TS, RECEIVED)
    live = orjson.loads(
        status_event(
            change.device_id,
            change.old_status,
            change.new_status,
            change.reason,
            change.last_seen,
            change.ts,
        )
    )
    stored = {  # a device_status_events row
        "device_id": change.device_id,
        "old_status": change.old_status,
        "new_status": change.new_status,
        "reason": change.reason,
        "last_seen": change.last_seen,
        "ts": change.ts,
    }
    [(levels, replayed)] = replay_events("devices", [stored])
    assert live == replayed and levels == ("status", "dev-1")
    assert live["ts"] == "2026-01-01T12:00:01.123456Z"

    # a snapshot reports a status, not a change: same fields, no resume point
    [(snapshot_levels, snapshot)] = snapshot_events(
        "devices", [{"device_id": "dev-1", "status": "online", "last_seen": TS}]
    )
    assert snapshot_levels == levels and snapshot.keys() == live.keys()
    assert snapshot == {**live, "old_status": None, "reason": "snapshot", "ts": None}


def test_an_alert_is_one_event_live_and_replayed() -> None:
    created = RECEIVED.timestamp()
    alert = Alert(
        alert_id="al-1",
        rule_id="hot",
        device_id="dev-1",
        metric="temperature",
        severity="high",
        title="hot",
        message="dev-1 is at 60",
        state="active",
        created_at=created,
        updated_at=created,
        threshold_value=50.0,
        actual_value=60.0,
    )
    acked = replace(
        alert,
        state="acknowledged",
        acknowledged_at=created + 1.5,
        acknowledged_by="alice",
        updated_at=created + 1.5,
    )

    def stored(a: Alert) -> dict[str, object]:  # an alerts row, as storage.alerts writes it
        def ts(epoch: float | None) -> datetime | None:
            return None if epoch is None else datetime.fromtimestamp(epoch, UTC)

        return {
            **{k: getattr(a, k) for k in ("alert_id", "rule_id", "device_id", "metric")},
            **{k: getattr(a, k) for k in ("severity", "title", "message", "state")},
            "kind": "value",
            "threshold_value": a.threshold_value,
            "actual_value": a.actual_value,
            "created_at": ts(a.created_at),
            "updated_at": ts(a.updated_at),
            "acknowledged_at": ts(a.acknowledged_at),
            "acknowledged_by": a.acknowledged_by,
            "resolved_at": ts(a.resolved_at),
        }

    for kind, a in (("created", alert), ("acknowledged", acked)):
        live = orjson.loads(alert_event(kind, a))
        [(levels, replayed)] = replay_events("alerts", [stored(a)])
        assert live == replayed and levels == ("alerts", "high", "dev-1")
    assert orjson.loads(alert_event("created", alert))["updated_at"].endswith(".123456Z")
