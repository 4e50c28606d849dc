"""The device telemetry schema (bridge/contract/mqtt.py, in docs/asyncapi.json) and the
ingest's validation (ingest/payload.py: a fast path and its pydantic ``_Entry``) accept and
refuse the same payloads. Times are inside the accepted window: the window is the bridge's
clock, not the payload's shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest.payload import PayloadError, parse_telemetry
from ingest.status import parse_status
from tests.contract.schemas import validator

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TS = "2026-01-01T11:59:00Z"
ENTRY = {"ts": TS, "values": {"t": 1.5}}

TELEMETRY: list[tuple[Any, bool]] = [
    ({"temperature": 23.5, "humidity": 45.2}, True),
    ({"ts": TS, "t": 1}, True),
    ({"ts": 1767268740000, "t": 1}, True),
    ({"ts": None, "t": 1}, True),
    ({"door": True}, True),
    (ENTRY, True),
    ({"values": {"t": 1}}, True),
    ({"ts": TS, "values": {"t": {"value": 23.5, "unit": "°C"}}}, True),
    ({"values": {"t": {"value": 1, "unit": None}}}, True),
    ({"values": {"t": {"value": 1}}}, True),
    ([ENTRY, ENTRY], True),
    ([ENTRY] * 1000, True),
    ({"t": "hot"}, False),
    ({"t": None}, False),
    ({"t": [1]}, False),
    ({"t": {"value": 1, "unit": "C", "x": 1}}, False),
    ({"t": {"unit": "C"}}, False),
    ({"t": {"value": 1, "unit": "x" * 33}}, False),
    ({"t": {"value": "1"}}, False),
    ({"1t": 1}, False),
    ({"a/b": 1}, False),
    ({"a" * 65: 1}, False),
    ({}, False),
    ({"ts": TS}, False),
    ({"ts": "yesterday", "t": 1}, False),
    ({"ts": True, "t": 1}, False),
    ({"values": {}}, False),
    ({"values": 5}, False),
    ({"values": {"t": 1}, "extra": 1}, False),
    ([], False),
    ([ENTRY] * 1001, False),
    ([{"t": 1}], False),
    ("online", False),
    (5, False),
]


@pytest.mark.parametrize(("payload", "valid"), TELEMETRY)
def test_telemetry_schema_agrees_with_the_ingest(payload: Any, valid: bool) -> None:
    try:
        parse_telemetry("d1", orjson.dumps(payload), NOW)
        accepted = True
    except PayloadError:
        accepted = False
    assert accepted is valid, "the table is wrong about the ingest"
    errors = list(validator("DeviceTelemetry").iter_errors(payload))
    assert (not errors) is valid, errors


STATUS: list[tuple[Any, bool]] = [
    ("online", True),
    ("offline", True),
    ({"status": "warning", "reason": "battery"}, True),
    ({"status": "online"}, True),
    ("sleeping", False),
    ({"status": "gone"}, False),
    ({"status": "online", "reason": 5}, False),
]


@pytest.mark.parametrize(("payload", "valid"), STATUS)
def test_status_schema_agrees_with_the_ingest(payload: Any, valid: bool) -> None:
    try:
        parse_status(orjson.dumps(payload))
        accepted = True
    except PayloadError:
        accepted = False
    assert accepted is valid, "the table is wrong about the ingest"
    errors = list(validator("DeviceStatusReport").iter_errors(payload))
    assert (not errors) is valid, errors
