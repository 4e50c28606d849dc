"""What a telemetry query asks for, validated; pure (no I/O).

The HTTP endpoint, the WebSocket ``query`` message and ``telemetry-bridge query`` all turn
their input into a :class:`TelemetryQuery` here, so they accept the same parameters and
refuse the same mistakes with the same words.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from storage import names
from storage.timestamps import parse_timestamp

AGGREGATIONS = ("avg", "min", "max", "sum", "count", "first", "last")
FILLS = ("none", "null", "previous", "zero")
SOURCES = ("auto", "raw", "rollup")
FORMATS = ("json", "csv")
MIN_BUCKET = timedelta(seconds=1)
MAX_BUCKET = timedelta(days=1)
MAX_BUCKETS = 10_000  # per series: a finer bucket over the range is a 422, not a slow query
MAX_DEVICES = 100
MAX_METRICS = 50
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
DEFAULT_RANGE = timedelta(hours=1)
# Times a query may name. Python's datetime ends at year 9999 and starts at year 1, so a range
# near either end overflows as soon as it is shifted (default range, bucket alignment): a
# bounded window turns those into a 422 naming the parameter instead of an OverflowError.
# Nothing is stored before 2000 (ingest.payload.EARLIEST) and readings may be at most hours
# ahead, so the window excludes no real data.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)
_TIME_RANGE = f"{EARLIEST_TIME:%Y-%m-%d} to {LATEST_TIME:%Y-%m-%d} UTC"
# Epoch milliseconds of LATEST_TIME have 13 digits: more is out of range whatever the digits
# (and Python refuses to turn a string of over 4,300 digits into an int at all).
_EPOCH_MS_DIGITS = 13
_WHOLE = re.compile(r"^[0-9]{1,9}$")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d{1,6})(ms|s|m|h|d|w)$")
_AMOUNT = r"\d{1,6}(?:ms|s|m|h|d|w)"
_RELATIVE = re.compile(rf"^now(?:\s*([+-])\s*({_AMOUNT}))?$|^([+-])({_AMOUNT})$")


class QueryError(ValueError):
    """A parameter is missing or wrong; the message names it and says what is accepted."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the previous page stopped: the last (device, metric, time) it returned."""

    device_id: str
    metric: str
    ts: datetime

    def encode(self) -> str:
        raw = orjson.dumps([self.device_id, self.metric, self.ts.isoformat()])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            device, metric, ts = orjson.loads(raw)
            when = datetime.fromisoformat(ts)
        except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
            raise QueryError("cursor: not a cursor this server returned") from None
        if not names.is_device_id(device) or not names.is_metric(metric) or when.tzinfo is None:
            raise QueryError("cursor: not a cursor this server returned")
        if not EARLIEST_TIME <= when <= LATEST_TIME:
            raise QueryError("cursor: not a cursor this server returned")
        return cls(device, metric, when)


@dataclass(frozen=True, slots=True)
class TelemetryQuery:
    devices: tuple[str, ...]
    metrics: tuple[str, ...] | None  # None: every metric of the devices
    start: datetime  # inclusive; for bucketed queries aligned down to the bucket
    end: datetime  # exclusive; for bucketed queries aligned up to the bucket
    bucket: timedelta | None = None
    agg: str = "avg"
    fill: str = "none"
    limit: int | None = DEFAULT_LIMIT  # None: everything (CSV export streams it)
    cursor: Cursor | None = None
    source: str = "auto"
    format: str = "json"

    @property
    def bucket_s(self) -> int | None:
        return int(self.bucket.total_seconds()) if self.bucket is not None else None


def parse_duration(text: str, what: str = "duration") -> timedelta:
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise QueryError(f"{what}: a duration like 30s, 5m, 1h or 1d")
    amount, unit = int(match[1]), match[2]
    if unit == "ms":
        return timedelta(milliseconds=amount)
    return timedelta(seconds=amount * _UNITS[unit])


def parse_time(value: Any, what: str, now: datetime) -> datetime:
    """Epoch milliseconds, ISO-8601, ``now``, ``now-1h`` or ``-1h`` (relative to now), from
    1970 to 2200 (:data:`EARLIEST_TIME`, :data:`LATEST_TIME`)."""
    try:
        when = _parse_time(value, what, now)
    except OverflowError:  # past year 1 or 9999: out of range, whatever the form
        raise QueryError(f"{what}: out of range (times from {_TIME_RANGE})") from None
    if not EARLIEST_TIME <= when <= LATEST_TIME:
        raise QueryError(f"{what}: out of range (times from {_TIME_RANGE})")
    return when


def _parse_time(value: Any, what: str, now: datetime) -> datetime:
    if isinstance(value, str):
        text = value.strip()
        relative = _RELATIVE.match(text)
        if relative:
            now_form = text.startswith("now")
            sign, amount = relative[1 if now_form else 3], relative[2 if now_form else 4]
            if amount is None:
                return now
            delta = parse_duration(amount, what)
            return now - delta if sign == "-" else now + delta
        digits = text.removeprefix("-")
        if digits.isdigit():
            if not digits.isascii():  # "²" is a digit to str.isdigit(), not to int()
                raise _bad_time(what)
            if len(digits) > _EPOCH_MS_DIGITS:
                raise OverflowError  # further out than any time in range
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= 10**_EPOCH_MS_DIGITS:
            raise OverflowError
    try:
        return parse_timestamp(value)
    except ValueError:
        raise _bad_time(what) from None


def _bad_time(what: str) -> QueryError:
    return QueryError(f"{what}: epoch milliseconds, ISO-8601, 'now' or a relative time like -1h")


def _floor(ts: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((ts - epoch) // step) * step


def _ceil(ts: datetime, step: timedelta) -> datetime:
    floor = _floor(ts, step)
    return floor if floor == ts else floor + step


def _names(value: Any, what: str, check: Any, most: int) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise QueryError(f"{what}: one name, a comma-separated list or a JSON list")
    if len(items) > most:
        raise QueryError(f"{what}: at most {most}")
    out = []
    for item in items:
        item = item.strip() if isinstance(item, str) else item
        if not check(item):
            raise QueryError(f"{what}: {names.safe_excerpt(item)} is not a valid name")
        out.append(item)
    return tuple(dict.fromkeys(out))


def _pick(params: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if params.get(key) not in (None, ""):
            return params[key]
    return None


def _choice(params: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = params.get(key)
    if value in (None, ""):
        return default
    if value not in allowed:
        raise QueryError(f"{key}: one of {', '.join(allowed)}")
    return str(value)


def _limit(value: Any, default: int | None) -> int | None:
    if value in (None, ""):
        return default
    if isinstance(value, str) and _WHOLE.match(value):  # ASCII digits, short enough for int()
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise QueryError(f"limit: a whole number from 1 to {MAX_LIMIT}")
    return value


def parse_query(params: Mapping[str, Any], now: datetime) -> TelemetryQuery:
    """Validate query parameters (strings from a URL or JSON values from a message)."""
    known = {
        "device_id", "devices", "agentId", "metric", "metrics", "from", "to", "start", "end",
        "bucket", "interval", "agg", "aggregation", "fill", "limit", "cursor", "source",
        "format", "type", "id",
    }  # fmt: skip
    unknown = sorted(k for k in params if k not in known)
    if unknown:
        raise QueryError(f"unknown parameter {names.safe_excerpt(unknown[0])}")
    device_value = _pick(params, "device_id", "devices", "agentId")
    if device_value is None:
        raise QueryError("device_id: required (one id or a list)")
    devices = _names(device_value, "device_id", names.is_device_id, MAX_DEVICES)
    metric_value = _pick(params, "metric", "metrics")
    metrics = None
    if metric_value is not None:
        metrics = _names(metric_value, "metric", names.is_metric, MAX_METRICS)

    end = parse_time(_pick(params, "to", "end") or "now", "to", now)
    start_value = _pick(params, "from", "start")
    start = end - DEFAULT_RANGE if start_value is None else parse_time(start_value, "from", now)
    if start >= end:
        raise QueryError("from must be before to")

    bucket = None
    bucket_value = _pick(params, "bucket", "interval")
    if bucket_value is not None:
        bucket = parse_duration(bucket_value, "bucket")
        if not MIN_BUCKET <= bucket <= MAX_BUCKET or bucket % MIN_BUCKET:
            raise QueryError("bucket: whole seconds from 1s to 1d")
        start, end = _floor(start, bucket), _ceil(end, bucket)
        count = (end - start) // bucket
        if count > MAX_BUCKETS:
            least = math.ceil((end - start).total_seconds() / MAX_BUCKETS)
            raise QueryError(
                f"bucket too small for the range: {count} buckets per series, at most "
                f"{MAX_BUCKETS}; use a bucket of at least {least}s"
            )
    agg_value = _pick(params, "agg", "aggregation")
    if agg_value is not None and agg_value not in AGGREGATIONS:
        raise QueryError(f"agg: one of {', '.join(AGGREGATIONS)}")
    if agg_value is not None and bucket is None:
        raise QueryError("agg needs a bucket (for example bucket=1m)")
    fill = _choice(params, "fill", FILLS, "none")
    if fill != "none" and bucket is None:
        raise QueryError("fill needs a bucket (for example bucket=1m)")
    source = _choice(params, "source", SOURCES, "auto")
    if source == "rollup" and (bucket is None or bucket % timedelta(minutes=1)):
        raise QueryError("source=rollup needs a bucket of whole minutes")
    output = _choice(params, "format", FORMATS, "json")
    cursor_value = params.get("cursor")
    cursor = None
    if cursor_value not in (None, ""):
        if not isinstance(cursor_value, str):
            raise QueryError("cursor: not a cursor this server returned")
        cursor = Cursor.decode(cursor_value)
    return TelemetryQuery(
        devices=devices,
        metrics=metrics,
        start=start,
        end=end,
        bucket=bucket,
        agg=str(agg_value or "avg"),
        fill=fill,
        limit=_limit(params.get("limit"), None if output == "csv" else DEFAULT_LIMIT),
        cursor=cursor,
        source=source,
        format=output,
    )
