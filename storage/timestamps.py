"""Timestamps clients and devices send: epoch milliseconds or ISO-8601, parsed one way.

Pure. Device payloads (``ingest.payload``), telemetry queries (:mod:`storage.query_spec`),
REST parameters and ``since`` resume points all parse their times here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_timestamp(value: Any) -> datetime:
    """Epoch milliseconds (int) or ISO-8601; a naive ISO time is taken as UTC."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be epoch milliseconds or an ISO-8601 string")
    if isinstance(value, int):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("epoch milliseconds out of range") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except OverflowError:  # year 1 at +14:00 or year 9999 at -14:00 leaves datetime's range
            raise ValueError("timestamp out of range") from None
        except ValueError:
            raise ValueError("not an ISO-8601 timestamp") from None
    raise ValueError("timestamp must be epoch milliseconds or an ISO-8601 string")
