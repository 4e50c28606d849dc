"""Table-driven tests of the telemetry payload parser: every form, every rejection reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ingest.payload import MAX_ENTRIES, PayloadError, Reading, parse_telemetry

NOW = datetime(2026, 11, 22, 12, 0, 0, 123000, tzinfo=UTC)
T1 = datetime(2026, 11, 22, 11, 59, 0, tzinfo=UTC)
T1_MS = int(T1.timestamp() * 1000)


def parse(payload: object, device: str = "d1", **kw: object) -> list[Reading]:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return parse_telemetry(device, raw, NOW, **kw)  # type: ignore[arg-type]


VALID = [
    pytest.param(
        {"temperature": 23.5, "humidity": 45.2},
        [("temperature", NOW, 23.5, None), ("humidity", NOW, 45.2, None)],
        id="flat-no-ts-uses-received-time",
    ),
    pytest.param(
        {"ts": "2026-11-22T11:59:00Z", "temperature": 1},
        [("temperature", T1, 1.0, None)],
        id="flat-with-ts",
    ),
    pytest.param(
        {"ts": "2026-11-22T11:59:00Z", "values": {"temperature": 23.5}},
        [("temperature", T1, 23.5, None)],
        id="values-iso-z",
    ),
    pytest.param(
        {"ts": "2026-11-22T13:59:00+02:00", "values": {"t": 1}},
        [("t", T1, 1.0, None)],
        id="iso-offset-normalised-to-utc",
    ),
    pytest.param(
        {"ts": "2026-11-22T11:59:00", "values": {"t": 1}},
        [("t", T1, 1.0, None)],
        id="naive-iso-taken-as-utc",
    ),
    pytest.param(
        {"ts": T1_MS, "values": {"temperature": {"value": 23.5, "unit": "°C"}}},
        [("temperature", T1, 23.5, "°C")],
        id="epoch-ms-with-unit",
    ),
    pytest.param(
        {"values": {"t": {"value": 2}}},
        [("t", NOW, 2.0, None)],
        id="value-object-without-unit",
    ),
    pytest.param(
        {"values": {"on": True, "off": False}},
        [("on", NOW, 1.0, None), ("off", NOW, 0.0, None)],
        id="booleans-as-1-0",
    ),
    pytest.param(
        [{"ts": T1_MS, "values": {"a": 1}}, {"ts": T1_MS + 1000, "values": {"a": 2}}],
        [("a", T1, 1.0, None), ("a", T1 + timedelta(seconds=1), 2.0, None)],
        id="list-of-entries",
    ),
    pytest.param(
        {"values": {"neg": -1e300, "zero": 0, "big": 12345678901234}},
        [
            ("neg", NOW, -1e300, None),
            ("zero", NOW, 0.0, None),
            ("big", NOW, 12345678901234.0, None),
        ],
        id="number-ranges",
    ),
]


@pytest.mark.parametrize(("payload", "expected"), VALID)
def test_valid_forms(
    payload: object, expected: list[tuple[str, datetime, float, str | None]]
) -> None:
    readings = parse(payload)
    assert [(r.metric, r.ts, r.value, r.unit) for r in readings] == expected
    assert all(r.device_id == "d1" for r in readings)


INVALID = [
    pytest.param(b"not json", "invalid_json", id="not-json"),
    pytest.param(b'{"t": NaN}', "invalid_json", id="nan-literal"),
    pytest.param(b'{"t": Infinity}', "invalid_json", id="infinity-literal"),
    pytest.param(b'{"t": 1e999}', "invalid_json", id="overflow-to-infinity"),
    pytest.param(b"\xff\xfe{}", "invalid_json", id="invalid-utf8"),
    pytest.param(b"", "invalid_json", id="empty-payload"),
    pytest.param(b'"just a string"', "invalid_shape", id="string-document"),
    pytest.param(b"42", "invalid_shape", id="number-document"),
    pytest.param(b"null", "invalid_shape", id="null-document"),
    pytest.param(b"[]", "empty", id="empty-list"),
    pytest.param(b"{}", "validation_error", id="empty-object"),
    pytest.param({"values": {}}, "validation_error", id="empty-values"),
    pytest.param({"t": "23.5"}, "validation_error", id="string-value"),
    pytest.param({"t": None}, "validation_error", id="null-value"),
    pytest.param({"t": [1, 2]}, "validation_error", id="list-value"),
    pytest.param({"t": {"nested": {"x": 1}}}, "validation_error", id="nested-object"),
    pytest.param({"t": {"value": 1, "unit": "C", "x": 2}}, "validation_error", id="extra-key"),
    pytest.param({"t": {"value": "1"}}, "validation_error", id="string-in-value-object"),
    pytest.param({"t": {"value": 1, "unit": 5}}, "validation_error", id="non-text-unit"),
    pytest.param({"t": {"value": 1, "unit": "u" * 33}}, "validation_error", id="long-unit"),
    pytest.param({"bad name": 1}, "validation_error", id="metric-with-space"),
    pytest.param({"a/b": 1}, "validation_error", id="metric-with-slash"),
    pytest.param({"+": 1}, "validation_error", id="metric-plus"),
    pytest.param({"#": 1}, "validation_error", id="metric-hash"),
    pytest.param({"$SYS": 1}, "validation_error", id="metric-sys"),
    pytest.param({"a\u0000": 1}, "validation_error", id="metric-nul"),
    pytest.param({"1abc": 1}, "validation_error", id="metric-leading-digit"),
    pytest.param({"m" * 65: 1}, "validation_error", id="metric-too-long"),
    pytest.param({"ts": True, "t": 1}, "validation_error", id="bool-ts"),
    pytest.param({"ts": "yesterday", "t": 1}, "validation_error", id="unparseable-ts"),
    pytest.param({"ts": 1.5e12, "values": {"t": 1}}, "validation_error", id="float-ts"),
    pytest.param({"ts": 10**17, "values": {"t": 1}}, "validation_error", id="ts-overflow"),
    pytest.param(b'{"ts": 100000000000000000000000, "t": 1}', "validation_error", id="huge-int"),
    pytest.param({"values": {"t": 1}, "extra": 1}, "validation_error", id="unknown-entry-key"),
    pytest.param([{"values": {"t": 1}}, 5], "validation_error", id="list-with-non-object"),
    pytest.param(
        [{"values": {"t": 1}}] * (MAX_ENTRIES + 1), "too_many_entries", id="too-many-entries"
    ),
    pytest.param({"ts": "2026-11-22T14:00:00Z", "t": 1}, "timestamp_out_of_range", id="future"),
    pytest.param({"ts": "2026-01-01T00:00:00Z", "t": 1}, "timestamp_out_of_range", id="too-old"),
    pytest.param({"ts": 0, "t": 1}, "timestamp_out_of_range", id="epoch-zero"),
    # values PostgreSQL cannot store are refused here, not by the database (which would fail
    # the whole batch of every device with them)
    pytest.param({"t": {"value": 1, "unit": "C\u0000"}}, "validation_error", id="unit-nul"),
    pytest.param(b'{"t": {"value": 1, "unit": "\\ud800"}}', "invalid_json", id="unit-surrogate"),
    pytest.param(b'{"t": {"value": 1, "unit": "\\udc00x"}}', "invalid_json", id="low-surrogate"),
    pytest.param(b'{"t": -1e400}', "invalid_json", id="overflow-to-minus-infinity"),
    pytest.param(b'{"t": 1' + b"0" * 400 + b"}", "invalid_json", id="400-digit-integer"),
    # valid ISO times with no UTC form in Python (OverflowError escaped validation before)
    pytest.param({"ts": "0001-01-01T00:00:00+01:00", "t": 1}, "validation_error", id="year-1"),
    pytest.param(
        {"ts": "9999-12-31T23:59:59-01:00", "values": {"t": 1}}, "validation_error", id="year-9999"
    ),
    pytest.param(
        [{"ts": "0001-01-01T00:30:00+01:00", "values": {"t": 1}}], "validation_error", id="list-y1"
    ),
]


@pytest.mark.parametrize(("payload", "reason"), INVALID)
def test_rejections(payload: object, reason: str) -> None:
    with pytest.raises(PayloadError) as err:
        parse(payload)
    assert err.value.reason == reason
    assert err.value.message  # always says what was wrong


def test_oversized_payload() -> None:
    payload = orjson.dumps({"t": 1, "pad": "x" * 70_000})
    with pytest.raises(PayloadError) as err:
        parse(payload)
    assert err.value.reason == "payload_too_large"


@pytest.mark.parametrize("device", ["", "+", "#", "a/b", "$SYS", "x\x00", "$share/g"])
def test_invalid_device_id_is_rejected(device: str) -> None:
    with pytest.raises(PayloadError) as err:
        parse({"t": 1}, device=device)
    assert err.value.reason == "invalid_device_id"


def test_windows_are_configurable() -> None:
    payload = {"ts": "2026-11-22T14:00:00Z", "t": 1}
    assert parse(payload, max_future=timedelta(hours=3))[0].value == 1.0


def test_windows_of_millennia_do_not_overflow() -> None:
    huge = timedelta(days=3_000_000)  # now +/- this is outside Python's datetime range
    assert parse({"t": 1}, max_future=huge, max_past=huge)[0].value == 1.0
    with pytest.raises(PayloadError) as err:
        parse({"ts": "1999-12-31T23:59:59Z", "t": 1}, max_future=huge, max_past=huge)
    assert err.value.reason == "timestamp_out_of_range"


def test_the_unit_refusal_says_why() -> None:
    with pytest.raises(PayloadError, match=r"values\.t: unit contains a NUL character"):
        parse({"values": {"t": {"value": 1, "unit": "a\u0000"}}})


def test_error_names_the_offending_metric() -> None:
    with pytest.raises(PayloadError, match=r"values\.temp: a value must be a finite number"):
        parse({"values": {"temp": "hot"}})
    with pytest.raises(PayloadError, match=r"1\.values\.x"):
        parse([{"values": {"x": 1}}, {"values": {"x": "bad"}}])
