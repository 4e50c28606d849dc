"""Shapes of what goes on the wire: timestamps and the validated stream's events.

This is the one module that builds a telemetry, status or alert event. The ingest publishes
them live; the front replays them from storage (``since``) and reads snapshots of them
(``snapshot: true``) through the ``stored_*``/``snapshot_*`` builders here, so a message is
the same message whichever way it reaches a client. In every one of them a resume point
(a reading's ``received_at``, a status change's ``ts``, an alert's ``updated_at``) is exact to
the microsecond (:func:`resume_time`): ``since`` compares with it, and a rounded one would
replay what the client already has or skip what it has not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ingest.rule_rows import alert_from_row


def iso_ms(dt: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z: ``2026-01-01T12:00:00.000Z``."""
    if dt.tzinfo is UTC:  # the common case, a third cheaper: already UTC, ends in +00:00
        return dt.isoformat(timespec="milliseconds")[:-6] + "Z"
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_us(dt: datetime) -> str:
    """ISO-8601 UTC with microseconds: ``received_at`` is exact, so it can be a resume point."""
    if dt.tzinfo is UTC:
        return dt.isoformat(timespec="microseconds")[:-6] + "Z"
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def device_time(dt: datetime) -> str:
    """A device's timestamp in a stream event: to the millisecond, as devices send them."""
    return iso_ms(dt)


def resume_time(dt: datetime) -> str:
    """A resume point in a stream event (``received_at``, a status change's ``ts``, an alert's
    ``updated_at``): exact, because ``since`` compares stored times with it."""
    return iso_us(dt)


def reading_fields(
    device_id: str, metric: str, value: float, unit: str | None, ts: str, received_at: str
) -> dict[str, Any]:
    """The event of ``telemetry/{device_id}/{metric}`` (PROTOCOL.md section 2), with ``ts``
    formatted by :func:`device_time` and ``received_at`` by :func:`resume_time`."""
    return {
        "device_id": device_id,
        "metric": metric,
        "value": value,
        "unit": unit,
        "ts": ts,
        "received_at": received_at,
    }


def reading_event(
    device_id: str, metric: str, value: float, unit: str | None, ts: str, received_at: str
) -> bytes:
    """Payload of ``telemetry/{device_id}/{metric}``: :func:`reading_fields`, serialised.

    Timestamps come pre-formatted: the readings of one message share them, and formatting
    once per message instead of once per reading is measurably cheaper.
    """
    return orjson.dumps(reading_fields(device_id, metric, value, unit, ts, received_at))


def json_number(value: float) -> str:
    """``value`` as orjson writes it: Python's shortest repr is the same digits whenever it
    has no exponent (checked over random doubles in tests/unit/test_event_shapes.py)."""
    text = repr(value)
    if "e" in text or "n" in text:  # exponent (or inf/nan, which validation refuses)
        return orjson.dumps(value).decode()
    return text


class ReadingTemplates:
    """The telemetry stream's (topic, payload) built from pre-built pieces: byte for byte what
    :func:`reading_event` makes, without a dict and a serialisation per reading.

    A device's metric keeps its topic, its JSON head (device_id, metric) and its unit across
    batches, so those are encoded once and cached (bounded: a fleet churning through ids
    clears it now and then).
    """

    def __init__(self, telemetry_topic: Callable[[str, str], str], max_size: int = 200_000):
        self._topic = telemetry_topic
        self._max = max_size
        self._pieces: dict[tuple[str, str, str | None], tuple[str, str, str]] = {}

    def pieces(self, device_id: str, metric: str, unit: str | None) -> tuple[str, str, str]:
        """(topic, the event up to its value, from the value to the ``ts`` text)."""
        key = (device_id, metric, unit)
        found = self._pieces.get(key)
        if found is None:
            if len(self._pieces) >= self._max:
                self._pieces.clear()
            head = (
                f'{{"device_id":{orjson.dumps(device_id).decode()},'
                f'"metric":{orjson.dumps(metric).decode()},"value":'
            )
            tail = f',"unit":{orjson.dumps(unit).decode()},"ts":"'
            found = self._pieces[key] = (self._topic(device_id, metric), head, tail)
        return found


class UtcTimes:
    """:func:`device_time` (``digits=3``) or :func:`resume_time` (``digits=6``) for a run of
    close UTC times (a batch's timestamps and received_at, milli- or microseconds apart): the
    text up to the seconds is made once per second, not once per time.
    """

    def __init__(self, digits: int = 6) -> None:
        if digits not in (3, 6):
            raise ValueError("digits: 3 or 6")
        self._start = self._end = datetime.min.replace(tzinfo=UTC)
        self._prefix = ""
        self._ms = digits == 3

    def text(self, dt: datetime) -> str:
        if not self._start <= dt < self._end:
            if dt.tzinfo is not UTC:
                return device_time(dt) if self._ms else resume_time(dt)
            self._start = dt.replace(microsecond=0)
            self._end = self._start + _SECOND
            self._prefix = self._start.isoformat(timespec="seconds")[:-6] + "."
        if self._ms:
            return f"{self._prefix}{dt.microsecond // 1000:03d}Z"
        return f"{self._prefix}{dt.microsecond:06d}Z"


_SECOND = timedelta(seconds=1)


def reading_payload(head: str, value: float, tail: str, ts: str, received_at: str) -> bytes:
    """:func:`reading_event` from :meth:`ReadingTemplates.pieces` (same bytes)."""
    return f'{head}{json_number(value)}{tail}{ts}","received_at":"{received_at}"}}'.encode()


def stored_reading(row: Mapping[str, Any]) -> dict[str, Any]:
    """The event of a stored reading (a ``readings`` or ``latest_values`` row)."""
    return reading_fields(
        row["device_id"],
        row["metric"],
        row["value"],
        row["unit"],
        device_time(row["ts"]),
        resume_time(row["received_at"]),
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


def status_fields(
    device_id: str,
    old_status: str | None,
    new_status: str,
    reason: str,
    last_seen: datetime | None,
    ts: datetime | None,
) -> dict[str, Any]:
    """The event of ``status/{device_id}`` (PROTOCOL.md section 2). ``ts`` is when the status
    changed; None only in a snapshot, which reports a status rather than a change."""
    return {
        "device_id": device_id,
        "old_status": old_status,
        "new_status": new_status,
        "reason": reason,
        "last_seen": iso_ms(last_seen) if last_seen else None,
        "ts": resume_time(ts) if ts else None,  # exact: a resume point (since)
    }


def status_event(
    device_id: str,
    old_status: str | None,
    new_status: str,
    reason: str,
    last_seen: datetime | None,
    ts: datetime,
) -> bytes:
    """Payload of ``status/{device_id}``: :func:`status_fields`, serialised."""
    return orjson.dumps(status_fields(device_id, old_status, new_status, reason, last_seen, ts))


def stored_status(row: Mapping[str, Any]) -> dict[str, Any]:
    """The event of a stored status change (a ``device_status_events`` row)."""
    return status_fields(
        row["device_id"],
        row["old_status"],
        row["new_status"],
        row["reason"],
        row["last_seen"],
        row["ts"],
    )


def snapshot_status(device_id: str, status: str, last_seen: datetime | None) -> dict[str, Any]:
    """A device's current status for ``snapshot: true``: no transition, so no old status and
    no ``ts`` (a snapshot frame is not a resume point)."""
    return status_fields(device_id, None, status, "snapshot", last_seen, None)


def alert_fields(event: str, alert: Any) -> dict[str, Any]:
    """The event of ``alerts/{severity}/{device_id}``: the alert object (PROTOCOL.md
    section 5). ``alert`` is an ``ingest.rules.Alert`` (times in epoch seconds)."""

    def ts(epoch: float | None) -> str | None:
        return None if epoch is None else iso_ms(datetime.fromtimestamp(epoch, UTC))

    return {
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
        else resume_time(
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


def alert_event(event: str, alert: Any) -> bytes:
    """Payload of ``alerts/{severity}/{device_id}``: :func:`alert_fields`, serialised."""
    return orjson.dumps(alert_fields(event, alert))


def stored_alert(row: Mapping[str, Any]) -> dict[str, Any]:
    """The event of a stored alert (an ``alerts`` row); which event it was follows from its
    state (an active alert never updated since it was created was just created)."""
    state = row["state"]
    if state == "active":
        kind = "created" if row["created_at"] == row["updated_at"] else "updated"
    else:
        kind = state
    event = alert_fields(kind, alert_from_row(dict(row)))
    event["updated_at"] = resume_time(row["updated_at"])  # exact: it is the resume point
    return event
