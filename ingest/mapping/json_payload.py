"""Reading firmware JSON: dotted paths, numeric leaves, device times (pure).

Firmware nests its readings (Tasmota ``{"ENERGY": {"Power": 12}}``, Shelly ``{"params":
{"switch:0": {"apower": 12.3}}}``); a mapping names them by the dotted path of their keys
(``ENERGY.Power``), a list element by its index (``Voltage.0``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo
from typing import Any

from ingest.payload import PayloadError

MAX_DEPTH = 8  # deeper than any firmware nests its readings; bounds the walk
MAX_LEAVES = 100_000  # bounds the walk of a hostile message before the readings limit
_MISSING = object()


def get_path(doc: Any, parts: tuple[str, ...]) -> Any:
    """The value at ``parts`` (a split dotted path), or None when any step is missing."""
    node = doc
    for part in parts:
        if type(node) is dict:
            node = node.get(part, _MISSING)
            if node is _MISSING:
                return None
        elif type(node) is list and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def split_path(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def leaves(doc: Any, booleans: bool, limit: int) -> list[tuple[str, float]]:
    """Every numeric leaf of ``doc`` as (dotted path, value), in document order. Text, null
    and (unless ``booleans``) true/false and ON/OFF are skipped; more than ``limit`` leaves,
    or nesting deeper than :data:`MAX_DEPTH`, refuses the message."""
    out: list[tuple[str, float]] = []
    _walk(doc, "", 0, booleans, out)
    if len(out) > limit:
        raise PayloadError("too_many_readings", f"more than {limit} numeric values in one message")
    return out


def _walk(node: Any, prefix: str, depth: int, booleans: bool, out: list[tuple[str, float]]) -> None:
    # one function, type() checks, no generator: this runs for every value of every message
    if depth >= MAX_DEPTH:
        raise PayloadError(
            "invalid_shape", f"{prefix or 'payload'} nests deeper than {MAX_DEPTH} levels"
        )
    items = node.items() if type(node) is dict else enumerate(node)
    for key, child in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        kind = type(child)
        if kind is float:
            if math.isfinite(child):
                out.append((path, child))
        elif kind is int:
            out.append((path, float(child)))
        elif kind is dict or kind is list:
            _walk(child, path, depth + 1, booleans, out)
        elif booleans and (value := number(child, True)) is not None:
            out.append((path, value))
    if len(out) > MAX_LEAVES:  # per container, not per value: a payload is bounded in bytes
        raise PayloadError("too_many_readings", f"more than {MAX_LEAVES} values in one message")


def number(raw: Any, booleans: bool) -> float | None:
    """``raw`` as a reading, or None when it is not one (text, null, a non-finite float)."""
    kind = type(raw)
    if kind is int:
        return float(raw)
    if kind is float:
        return raw if math.isfinite(raw) else None
    if booleans:
        if kind is bool:
            return 1.0 if raw else 0.0
        if raw == "ON":
            return 1.0
        if raw == "OFF":
            return 0.0
    return None


_UNIX_DIVISORS = {"unix_s": 1, "unix_ms": 1_000, "unix_us": 1_000_000, "unix_ns": 1_000_000_000}


def device_time(raw: Any, fmt: str, zone: tzinfo) -> datetime:
    """A device's timestamp in ``fmt`` (see :class:`~ingest.mapping.spec.TimestampSpec`).
    Raises PayloadError(validation_error) for a value that is not one."""
    if fmt == "iso8601":
        if type(raw) is not str:
            raise PayloadError("validation_error", "timestamp: expected ISO-8601 text")
        try:
            parsed = datetime.fromisoformat(raw)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=zone)
            return parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            raise PayloadError("validation_error", "timestamp: not an ISO-8601 time") from None
    divisor = _UNIX_DIVISORS[fmt]
    if type(raw) is str:
        try:
            raw = float(raw) if "." in raw else int(raw)
        except ValueError:
            raise PayloadError("validation_error", f"timestamp: expected {fmt} number") from None
    if type(raw) not in (int, float) or not math.isfinite(raw):
        raise PayloadError("validation_error", f"timestamp: expected {fmt} number")
    try:
        if type(raw) is int and divisor > 1:
            # integer arithmetic keeps nanoseconds exact down to the microsecond
            seconds, rest = divmod(raw, divisor)
            micros = rest * 1_000_000 // divisor
            return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=micros)
        return datetime.fromtimestamp(raw / divisor, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise PayloadError("timestamp_out_of_range", f"timestamp {raw} out of range") from None
