"""Shapes of what the ingest puts on the wire: timestamps and validated-stream payloads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson


def iso_ms(dt: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z: ``2026-01-01T12:00:00.000Z``."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_us(dt: datetime) -> str:
    """ISO-8601 UTC with microseconds: ``received_at`` is exact, so it can be a resume point."""
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def reading_event(
    device_id: str, metric: str, value: float, unit: str | None, ts: str, received_at: str
) -> bytes:
    """Payload of ``telemetry/{device_id}/{metric}`` (PROTOCOL.md section 2).

    Timestamps come pre-formatted with :func:`iso_ms`: the readings of one message share
    them, and formatting once per message instead of once per reading is measurably cheaper.
    """
    return orjson.dumps(
        {
            "device_id": device_id,
            "metric": metric,
            "value": value,
            "unit": unit,
            "ts": ts,
            "received_at": received_at,
        }
    )


def device_error(reason: str, message: str, topic: str, received_at: datetime) -> bytes:
    """Payload of ``devices/{id}/errors``: tells a device why its message was rejected."""
    return orjson.dumps(
        {
            "error": reason,
            "message": message,
            "topic": topic,
            "received_at": iso_ms(received_at),
        }
    )


def status_event(
    device_id: str,
    old_status: str | None,
    new_status: str,
    reason: str,
    last_seen: datetime | None,
    ts: datetime,
) -> bytes:
    """Payload of ``status/{device_id}`` (PROTOCOL.md section 2)."""
    return orjson.dumps(
        {
            "device_id": device_id,
            "old_status": old_status,
            "new_status": new_status,
            "reason": reason,
            "last_seen": iso_ms(last_seen) if last_seen else None,
            "ts": iso_us(ts),  # exact: a resume point (since)
        }
    )


def alert_event(event: str, alert: Any) -> bytes:
    """Payload of ``alerts/{severity}/{device_id}``: the alert object (PROTOCOL.md section 5)."""

    def ts(epoch: float | None) -> str | None:
        return None if epoch is None else iso_ms(datetime.fromtimestamp(epoch, UTC))

    return orjson.dumps(
        {
            "event": event,
            "alert_id": alert.alert_id,
            "rule_id": alert.rule_id,
            "device_id": alert.device_id,
            "metric": alert.metric,
            "severity": alert.severity,
            "title": alert.title,
            "message": alert.message,
            "state": alert.state,
            "created_at": ts(alert.created_at),
            "updated_at": None
            if alert.updated_at is None
            else iso_us(
                datetime.fromtimestamp(alert.updated_at, UTC)
            ),  # exact: a resume point (since)
            "acknowledged_at": ts(alert.acknowledged_at),
            "acknowledged_by": alert.acknowledged_by,
            "resolved_at": ts(alert.resolved_at),
            "metadata": {
                "threshold_value": alert.threshold_value,
                "actual_value": alert.actual_value,
            },
        }
    )
