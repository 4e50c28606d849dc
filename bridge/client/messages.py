"""The typed messages a subscription yields, and the pure parsing of the bridge's frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True)
class TelemetryUpdate:
    device_id: str
    metric: str
    value: Any
    unit: str | None
    timestamp: str | None
    received_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class AlertEvent:
    alert_id: str
    device_id: str
    severity: str
    state: str
    title: str | None
    message: str | None
    metric: str | None
    received_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class DeviceStatus:
    device_id: str
    old_status: str | None
    new_status: str
    reason: str | None
    last_seen: str | None
    received_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class SystemStatus:
    component: str | None
    metrics: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Event:
    """Any other live message (logs, events), as sent."""

    type: str
    raw: dict[str, Any] = field(repr=False, compare=False)


Update = TelemetryUpdate | AlertEvent | DeviceStatus | SystemStatus | Event


def decode_frame(frame: str | bytes) -> list[dict[str, Any]]:
    """The messages in one WebSocket frame: the frame itself, or the members of a ``batch``
    (anything that is not a JSON object is left out). Raises ``ValueError`` for a frame that
    is not JSON and ``TypeError`` for a batch whose ``messages`` cannot be iterated."""
    msg = orjson.loads(frame)
    if not isinstance(msg, dict):
        return []
    if msg.get("type") != "batch":
        return [msg]
    return [one for one in msg.get("messages") or () if isinstance(one, dict)]


def parse_live(msg: dict[str, Any]) -> list[Update]:
    """The typed messages in one live frame (a telemetry frame may carry several metrics).
    Raises ``KeyError`` or ``ValueError`` for a message that cannot be one (the reader skips
    it, loudly), never another exception."""
    kind = msg.get("type")
    if kind == "telemetry_update":
        readings = msg.get("telemetry") or {}
        if not isinstance(readings, dict) or not all(
            isinstance(r, dict) for r in readings.values()
        ):
            raise ValueError("telemetry_update: `telemetry` is not an object of readings")
        return [
            TelemetryUpdate(
                device_id=msg["device_id"],
                metric=metric,
                value=reading.get("value"),
                unit=reading.get("unit"),
                timestamp=reading.get("timestamp"),
                received_at=msg.get("received_at"),
                raw=msg,
            )
            for metric, reading in readings.items()
        ]
    if kind == "alert":
        return [
            AlertEvent(
                alert_id=msg["alert_id"],
                device_id=msg["device_id"],
                severity=msg.get("severity", ""),
                state=msg.get("state", ""),
                title=msg.get("title"),
                message=msg.get("message"),
                metric=msg.get("metric"),
                received_at=msg.get("received_at"),
                raw=msg,
            )
        ]
    if kind == "device_status_update":
        metadata = msg.get("metadata")
        return [
            DeviceStatus(
                device_id=msg["device_id"],
                old_status=msg.get("old_status"),
                new_status=msg.get("new_status", ""),
                reason=msg.get("reason"),
                last_seen=metadata.get("last_seen") if isinstance(metadata, dict) else None,
                received_at=msg.get("received_at"),
                raw=msg,
            )
        ]
    if kind == "system_status_update":
        return [SystemStatus(msg.get("component"), msg.get("metrics") or {}, raw=msg)]
    return [Event(str(kind), raw=msg)]


def identity(update: Update) -> tuple[Any, ...] | None:
    """What makes a message the same message when the server sends it again after a resume
    (``None``: no identity, never dropped as a repeat)."""
    if isinstance(update, TelemetryUpdate):
        return ("t", update.device_id, update.metric, update.timestamp, update.received_at)
    if isinstance(update, AlertEvent):
        return ("a", update.alert_id, update.state, update.received_at)
    if isinstance(update, DeviceStatus):
        return ("s", update.device_id, update.new_status, update.received_at)
    return None
