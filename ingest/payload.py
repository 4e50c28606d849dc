"""Telemetry payload validation (PROTOCOL.md section 2), pure: bytes in, readings or an error out.

Accepted forms::

    {"temperature": 23.5, "humidity": 45.2}                     flat (optional "ts" key)
    {"ts": "2026-01-01T12:00:00Z", "values": {"temperature": 23.5}}
    {"ts": 1767268800000, "values": {"temperature": {"value": 23.5, "unit": "°C"}}}
    [{"ts": ..., "values": {...}}, ...]                          up to 1,000 entries

Values are finite numbers or booleans (stored as 1/0). Anything else rejects the whole
message with a :class:`PayloadError` whose ``reason`` is a stable snake_case code and whose
message says what was wrong, so the device can fix it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from ingest.storable import text_problem
from storage import names
from storage.timestamps import parse_timestamp  # also the public name for REST and `since`

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_ENTRIES = 1_000
MAX_READINGS = 10_000
MAX_UNIT_LENGTH = 32
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Reading:
    device_id: str
    metric: str
    ts: datetime
    value: float
    unit: str | None


# Every reason a message is dead-lettered for: a stable code each, shown by the ingest's
# metrics at 0 from the start (an alert on a rate needs the series to exist). The list is
# checked against every PayloadError raised in the code (tests/unit/test_ingest_metrics.py).
DEAD_LETTER_REASONS = (
    "empty",
    "invalid_device_id",
    "invalid_json",
    "invalid_line_protocol",
    "invalid_shape",
    "no_mapping",
    "payload_too_large",
    "sparkplug_invalid_payload",
    "sparkplug_invalid_topic",
    "sparkplug_unknown_alias",
    "storage_error",
    "timestamp_out_of_range",
    "too_many_entries",
    "too_many_readings",
    "unprocessable",
    "validation_error",
)


class PayloadError(ValueError):
    """A payload that can never be stored. ``reason`` is a stable code for the dead letter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]
MetricName = Annotated[str, StringConstraints(pattern=f"^{names.METRIC_PATTERN}$")]
_VALUE_HELP = 'a value must be a finite number, a boolean, or {"value": number, "unit": text}'


def _number(raw: Any) -> float:
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float) and math.isfinite(raw):
        return float(raw)
    raise ValueError(_VALUE_HELP)


def _value(raw: Any) -> tuple[float, str | None]:
    """One metric value as (number, unit); a plain function gives one clear error message."""
    if isinstance(raw, dict):
        unit = raw.get("unit")
        if "value" not in raw or set(raw) - {"value", "unit"}:
            raise ValueError(_VALUE_HELP)
        if unit is not None and not (isinstance(unit, str) and len(unit) <= MAX_UNIT_LENGTH):
            raise ValueError(f"unit must be text of at most {MAX_UNIT_LENGTH} characters")
        if unit is not None and (problem := text_problem(unit)):
            raise ValueError(f"unit {problem}")
        return _number(raw["value"]), unit
    return _number(raw), None


Value = Annotated[tuple[float, str | None], PlainValidator(_value)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ts: Timestamp | None = None
    values: Annotated[dict[MetricName, Value], Field(min_length=1)]


_ENTRY = TypeAdapter(_Entry)
_ENTRIES = TypeAdapter(list[_Entry])
_FLAT = TypeAdapter(Annotated[dict[MetricName, Value], Field(min_length=1)])
_TS = TypeAdapter(Timestamp)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(names.safe_excerpt(part, 70) for part in err["loc"])
    # pydantic locates a bad dict key as "<key>.[key]"; say it in words instead.
    if loc.endswith(".[key]"):
        return f"invalid metric name {loc[: -len('.[key]')]}"
    msg = err["msg"].removeprefix("Value error, ").replace("instance of _Entry", "entry")
    return f"{loc}: {msg}" if loc else msg


def check_time(ts: datetime, now: datetime, max_future: timedelta, max_past: timedelta) -> None:
    """Refuse a reading time outside the accepted window around ``now`` (the receive time)."""
    # Differences, not now +/- window: the sum overflows for a window configured in millennia.
    if ts - now > max_future:
        raise PayloadError(
            "timestamp_out_of_range",
            f"timestamp {ts.isoformat()} is more than {max_future} ahead of the bridge clock",
        )
    if now - ts > max_past or ts < EARLIEST:
        raise PayloadError(
            "timestamp_out_of_range",
            f"timestamp {ts.isoformat()} is older than the accepted window of {max_past}",
        )


def parse_telemetry(
    device_id: str,
    payload: bytes,
    received_at: datetime,
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_future: timedelta = timedelta(hours=1),
    max_past: timedelta = timedelta(days=30),
) -> list[Reading]:
    """Validate one MQTT telemetry message from ``device_id`` into readings.

    ``received_at`` (timezone-aware) stands in for a missing ``ts`` and anchors the accepted
    time window. Raises :class:`PayloadError` for anything that cannot be stored.
    """
    return [
        Reading(device_id, name, at, value, unit)
        for at, values in parse_entries(
            device_id,
            payload,
            received_at,
            max_bytes=max_bytes,
            max_future=max_future,
            max_past=max_past,
        )
        for name, (value, unit) in values.items()
    ]


Entries = list[tuple[datetime, dict[str, tuple[float, str | None]]]]


def parse_entries(
    device_id: str,
    payload: bytes,
    received_at: datetime,
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_future: timedelta = timedelta(hours=1),
    max_past: timedelta = timedelta(days=30),
) -> Entries:
    """:func:`parse_telemetry` without the Reading objects: (ts, {metric: (value, unit)}) per
    entry, for callers that build their own rows."""
    if not names.is_device_id(device_id):
        raise PayloadError("invalid_device_id", str(_invalid(names.device_id, device_id)))
    if len(payload) > max_bytes:
        raise PayloadError(
            "payload_too_large", f"payload of {len(payload)} bytes exceeds {max_bytes} bytes"
        )
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("invalid_json", f"not UTF-8 JSON: {exc}") from None

    entries = _common_entries(doc)
    if entries is None:
        entries = _validated_entries(doc)
        _remember_units(entries)
    out: Entries = []
    count = 0
    for ts, values in entries:
        at = ts if ts is not None else received_at
        check_time(at, received_at, max_future, max_past)
        out.append((at, values))
        count += len(values)
    if count > MAX_READINGS:
        raise PayloadError(
            "too_many_readings", f"{count} readings exceed the limit of {MAX_READINGS}"
        )
    return out


_Unchecked = list[tuple[datetime | None, dict[str, tuple[float, str | None]]]]


def _validated_entries(doc: Any) -> _Unchecked:
    """Every accepted form, through the pydantic models (and their error messages)."""
    try:
        if isinstance(doc, list):
            if not doc:
                raise PayloadError("empty", "the list holds no entries")
            if len(doc) > MAX_ENTRIES:
                raise PayloadError(
                    "too_many_entries", f"{len(doc)} entries exceed the limit of {MAX_ENTRIES}"
                )
            parsed = _ENTRIES.validate_python(doc)
            return [(e.ts, e.values) for e in parsed]
        if isinstance(doc, dict) and "values" in doc:
            entry = _ENTRY.validate_python(doc)
            return [(entry.ts, entry.values)]
        if isinstance(doc, dict):
            flat = dict(doc)
            raw_ts = flat.pop("ts", None)
            try:
                ts = _TS.validate_python(raw_ts) if raw_ts is not None else None
            except ValidationError as exc:
                raise PayloadError("validation_error", "ts: " + _first_error(exc)) from None
            return [(ts, _FLAT.validate_python(flat))]
        raise PayloadError("invalid_shape", "payload must be a JSON object or a list of them")
    except ValidationError as exc:
        raise PayloadError("validation_error", _first_error(exc)) from None


# Metric names and units seen valid: checked once, then a set lookup (bounded).
_GOOD_METRICS: set[str] = set()
_GOOD_UNITS: set[str] = set()
_GOOD_MAX = 10_000


def _common_entries(doc: Any) -> _Unchecked | None:
    """The forms devices send all the time (one object, ``{"ts", "values"}`` or flat), checked
    by hand: the same rules as the models, several times faster. None when anything is
    unusual or wrong: the models then decide, and word the error."""
    if type(doc) is not dict:
        return None
    if "values" in doc:
        values = doc["values"]
        if type(values) is not dict or len(doc) > (2 if "ts" in doc else 1):
            return None
    else:
        values = doc
    raw_ts = doc.get("ts")
    ts: datetime | None = None
    if raw_ts is not None:
        if type(raw_ts) is not str and type(raw_ts) is not int:
            return None
        try:
            ts = parse_timestamp(raw_ts)
        except ValueError:
            return None
    checked: dict[str, tuple[float, str | None]] = {}
    flat = values is doc
    for name, raw in values.items():
        if flat and name == "ts":
            continue  # the flat form's timestamp, not a metric
        if name not in _GOOD_METRICS:
            if not names.is_metric(name):
                return None
            if len(_GOOD_METRICS) < _GOOD_MAX:
                _GOOD_METRICS.add(name)
        kind = type(raw)
        if kind is dict and len(raw) == 2 and "value" in raw and "unit" in raw:
            number, unit = raw["value"], raw["unit"]
            if unit is not None and (type(unit) is not str or unit not in _GOOD_UNITS):
                return None  # first sight of this unit (or not text): _value checks it
            kind = type(number)
            if not (kind is int or (kind is float and math.isfinite(number))):
                return None
            checked[name] = (float(number), unit)
        elif (kind is float and math.isfinite(raw)) or kind is int:
            checked[name] = (float(raw), None)
        else:
            return None
    if not checked:
        return None
    return [(ts, checked)]


def _remember_units(entries: _Unchecked) -> None:
    for _, values in entries:
        for _, unit in values.values():
            if unit is not None and len(_GOOD_UNITS) < _GOOD_MAX:
                _GOOD_UNITS.add(unit)


def _invalid(check: Any, value: object) -> names.InvalidName:
    try:
        check(value)
    except names.InvalidName as exc:
        return exc
    raise AssertionError("value was valid")  # pragma: no cover
