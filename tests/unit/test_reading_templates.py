"""The stream's telemetry payloads from templates are byte for byte what orjson makes of the
event dict (ingest/wire.py reading_event), whatever the value, unit or timestamp."""

from __future__ import annotations

import math
import random
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ingest.prepared import stream_readings
from ingest.topics import Topics
from ingest.wire import (
    ReadingTemplates,
    UtcTimes,
    device_time,
    iso_ms,
    iso_us,
    json_number,
    reading_event,
    resume_time,
)

TS = datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)
RX = datetime(2026, 1, 1, 12, 0, 1, 0, tzinfo=UTC)  # whole second: the digits must stay

VALUES = [0.0, -0.0, 1.0, 21.5, -3.25, 0.1, 1e-5, 1e-4, 1e15, 1e16, 1.5e300, 5e-324, 2.0**53]
UNITS = [None, "°C", "%", 'in"ch', "back\\slash", "tab\tx", "µS/cm", "雨"]


def random_doubles(n: int) -> list[float]:
    rng = random.Random(7)
    out: list[float] = []
    while len(out) < n:
        (v,) = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))
        if math.isfinite(v):
            out.append(v)
    return out + [round(rng.uniform(-1000, 1000), 3) for _ in range(n)]


def test_numbers_are_written_as_orjson_writes_them() -> None:
    import orjson

    for v in VALUES + random_doubles(20_000):
        assert json_number(v) == orjson.dumps(v).decode(), v


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("value", VALUES)
def test_template_payload_is_the_event_dict_serialised(value: float, unit: str | None) -> None:
    topics = Topics("site-a")
    row = ("dev-1", "temp.c_1", TS, value, unit, RX)
    [(topic, payload)] = stream_readings([row], None, ReadingTemplates(topics.telemetry))
    assert topic == topics.telemetry("dev-1", "temp.c_1")
    assert payload == reading_event(
        "dev-1", "temp.c_1", value, unit, device_time(TS), resume_time(RX)
    )


@pytest.mark.parametrize(
    "dt",
    [
        TS,
        RX,
        datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 1, 1, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_utc_fast_formatting_matches_the_general_one(dt: datetime) -> None:
    general_ms = dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    general_us = dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert iso_ms(dt) == general_ms
    assert iso_us(dt) == general_us


def test_templates_are_bounded() -> None:
    templates = ReadingTemplates(Topics("").telemetry, max_size=3)
    for i in range(10):
        templates.pieces(f"d{i}", "m", None)
    assert len(templates._pieces) <= 3


@pytest.mark.parametrize(("digits", "one_by_one"), [(3, device_time), (6, resume_time)])
def test_times_of_a_run_match_one_by_one_formatting(digits: int, one_by_one: Any) -> None:
    times = UtcTimes(digits)
    start = datetime(2026, 1, 1, 23, 59, 58, 999_990, tzinfo=UTC)
    run = [start + timedelta(microseconds=k * 7) for k in range(3000)]  # across midnight
    run += [start + timedelta(milliseconds=k) for k in range(3000)]
    run.append(datetime(2026, 1, 2, 0, 0, 0, 5, tzinfo=timezone(timedelta(hours=1))))
    run.append(start)  # back in time
    assert [times.text(dt) for dt in run] == [one_by_one(dt) for dt in run]
