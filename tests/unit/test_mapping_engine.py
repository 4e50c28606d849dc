"""The declarative mapping engine: patterns, specs, refusals with their reasons, limits."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from ingest.mapping.declared import DeclaredMapping
from ingest.mapping.pattern import PatternError, compile_pattern, filter_covers
from ingest.mapping.spec import MappingSpec
from ingest.payload import DEAD_LETTER_REASONS, MAX_PAYLOAD_BYTES, MAX_READINGS, PayloadError

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def mapping(**spec: Any) -> DeclaredMapping:
    base: dict[str, Any] = {"name": "m", "topic": "plant/{device}/data", "payload": "json_leaves"}
    return DeclaredMapping(MappingSpec.model_validate(base | spec))


def refused(m: DeclaredMapping, payload: bytes, topic: str = "plant/p1/data") -> PayloadError:
    with pytest.raises(PayloadError) as err:
        m.extract(topic, payload, NOW)
    return err.value


# -- patterns --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "topic", "levels"),
    [
        ("tele/{device}/SENSOR", "tele/k1/SENSOR", {"device": "k1"}),
        ("tele/{device}/SENSOR", "tele/k1/STATE", None),
        ("tele/{device}/SENSOR", "tele//SENSOR", None),  # an empty level is no name
        ("tele/{device}/SENSOR", "tele/a/b/SENSOR", None),
        ("z/{device#}", "z/a", {"device": "a"}),
        ("z/{device#}", "z/a/b c/d", {"device": "a/b c/d"}),
        ("z/{device#}", "z", None),
        ("z/{device#}/availability", "z/a/b/availability", {"device": "a/b"}),
        ("z/{device#}/availability", "z/availability", None),
        ("{node}/sensor/{name}/state", "n/sensor/t/state", {"node": "n", "name": "t"}),
        ("a/+/c/#", "a/x/c/d/e", {}),
    ],
)
def test_pattern_match(pattern: str, topic: str, levels: dict[str, str] | None) -> None:
    assert compile_pattern(pattern).match(topic) == levels


@pytest.mark.parametrize(
    ("pattern", "filter_"),
    [
        ("tele/{device}/SENSOR", "tele/+/SENSOR"),
        ("z/{device#}/availability", "z/#"),
        ("{node}/sensor/{name}/state", "+/sensor/+/state"),
        ("spBv1.0/+/NDATA/#", "spBv1.0/+/NDATA/#"),
    ],
)
def test_pattern_filter(pattern: str, filter_: str) -> None:
    assert compile_pattern(pattern).filter == filter_


@pytest.mark.parametrize(
    "pattern",
    ["", "$SYS/{x}", "a/{x}/{x}", "a/{x#}/{y#}", "a/#/b", "a/b+/c", "a/{}/c", "a//c", "a/{1x}"],
)
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(PatternError):
        compile_pattern(pattern)


@pytest.mark.parametrize(
    ("wide", "narrow", "covers"),
    [
        ("a/#", "a/+/b", True),
        ("+/b", "a/b", True),
        ("a/+", "a/#", False),
        ("a/+", "a/b/c", False),
        ("#", "x/y", True),
        ("a/b", "a/b", True),
    ],
)
def test_filter_covers(wide: str, narrow: str, covers: bool) -> None:
    assert filter_covers(wide, narrow) is covers


# -- specs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"topic": "plant/{site}/data"}, "device level {device}"),
        ({"payload": "json_paths"}, "needs paths"),
        ({"payload": "json_paths", "paths": {"1bad": "a"}}, "invalid metric name"),
        ({"payload": "bare_number"}, "exactly one of metric"),
        ({"payload": "status"}, "status_words"),
        ({"timestamp": {"format": "unix_ms"}}, "needs a path"),
        ({"timestamp": {"path": "t", "format": "iso8601", "timezone": "Mars/Base"}}, "time zone"),
        ({"device": {"level": None}}, "exactly one of level or path"),
        ({"device": {"level": "device", "transforms": ["shorten"]}}, "transforms"),
        ({"topic": "a/{x#}/{y#}"}, "multi-level"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_spec_refusals(spec: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says.replace("{", r"\{").replace("}", r"\}")):
        mapping(**spec)


# -- extraction --------------------------------------------------------------------------------
def test_json_paths_with_units_and_time() -> None:
    m = mapping(
        payload="json_paths",
        paths={"flow_temp": "t.flow", "pump": "pumps.0.on", "absent": "x.y"},
        booleans=True,
        timestamp={"path": "at", "format": "unix_ms"},
        units={"*_temp": "°C"},
    )
    at = NOW - timedelta(minutes=1)
    payload = orjson.dumps(
        {"at": int(at.timestamp() * 1000), "t": {"flow": 55.5}, "pumps": [{"on": True}]}
    )
    [got] = m.extract("plant/p1/data", payload, NOW).readings
    assert got.device_id == "p1"
    assert got.entries == [(at, {"flow_temp": (55.5, "°C"), "pump": (1.0, None)})]


@pytest.mark.parametrize(
    ("fmt", "raw", "expected"),
    [
        ("unix_s", 1795348740, datetime(2026, 11, 22, 11, 59, tzinfo=UTC)),
        ("unix_s", "1795348740.25", datetime(2026, 11, 22, 11, 59, 0, 250000, tzinfo=UTC)),
        ("unix_ms", 1795348740123, datetime(2026, 11, 22, 11, 59, 0, 123000, tzinfo=UTC)),
        ("unix_us", 1795348740123456, datetime(2026, 11, 22, 11, 59, 0, 123456, tzinfo=UTC)),
        ("unix_ns", 1795348740123456789, datetime(2026, 11, 22, 11, 59, 0, 123456, tzinfo=UTC)),
        ("iso8601", "2026-11-22T12:59:00+01:00", datetime(2026, 11, 22, 11, 59, tzinfo=UTC)),
        ("iso8601", "2026-11-22T11:59:00", datetime(2026, 11, 22, 11, 59, tzinfo=UTC)),
    ],
)
def test_time_formats(fmt: str, raw: Any, expected: datetime) -> None:
    m = mapping(timestamp={"path": "ts", "format": fmt}, exclude=["ts"])
    [got] = m.extract("plant/p1/data", orjson.dumps({"ts": raw, "v": 1}), NOW).readings
    assert got.entries[0][0] == expected


def test_missing_time_is_the_receive_time() -> None:
    m = mapping(timestamp={"path": "ts", "format": "unix_s"})
    [got] = m.extract("plant/p1/data", b'{"v": 1}', NOW).readings
    assert got.entries[0][0] == NOW


@pytest.mark.parametrize(
    ("spec", "payload", "reason"),
    [
        ({}, b"", "empty"),
        ({}, b"{not json", "invalid_json"),
        ({}, b"[1, 2]", "invalid_shape"),
        ({}, b"42", "invalid_shape"),
        ({}, b'{"bad name": 1}', "validation_error"),
        ({}, b'{"9lives": 1}', "validation_error"),
        ({}, orjson.dumps({"a" * 65: 1}), "validation_error"),
        (
            {"timestamp": {"path": "ts", "format": "unix_s"}},
            b'{"ts": "soon", "v": 1}',
            "validation_error",
        ),
        (
            {"timestamp": {"path": "ts", "format": "unix_s"}},
            b'{"ts": 1e300, "v": 1}',
            "timestamp_out_of_range",
        ),
        (
            {"timestamp": {"path": "ts", "format": "iso8601"}},
            b'{"ts": "2020-01-01T00:00:00Z", "v": 1}',
            "timestamp_out_of_range",
        ),
        (
            {"timestamp": {"path": "ts", "format": "iso8601"}},
            b'{"ts": "2026-11-22T14:00:00Z", "v": 1}',
            "timestamp_out_of_range",
        ),
        (
            {"timestamp": {"path": "ts", "format": "iso8601"}},
            b'{"ts": 5, "v": 1}',
            "validation_error",
        ),
        ({"device": {"path": "src", "level": None}}, b'{"v": 1}', "invalid_device_id"),
        (
            {"device": {"path": "src", "level": None}},
            b'{"src": "a/b", "v": 1}',
            "invalid_device_id",
        ),
        ({"device": {"path": "src", "level": None}}, b'{"src": 7, "v": 1}', "invalid_device_id"),
        ({"payload": "bare_number", "metric": "t"}, b"12abc", "validation_error"),
        ({"payload": "status", "status_words": {"up": "online"}}, b"sideways", "validation_error"),
        ({"payload": "line_protocol"}, b"m v=", "invalid_line_protocol"),
        ({"payload": "line_protocol"}, b"\xff\xfe", "invalid_line_protocol"),
    ],
)
def test_refusals_carry_their_reason(spec: dict[str, Any], payload: bytes, reason: str) -> None:
    assert refused(mapping(**spec), payload).reason == reason


@pytest.mark.parametrize("device", ["-lead", "a b", "x" * 65, "é", "$share", "a+b", "a#"])
def test_device_ids_never_mangled(device: str) -> None:
    err = refused(mapping(), b'{"v": 1}', topic=f"plant/{device}/data")
    assert err.reason == "invalid_device_id" and "topic level {device}" in err.message


def test_device_transforms_are_opt_in_and_still_validated() -> None:
    m = mapping(device={"level": "device", "transforms": ["lowercase", "replace_spaces"]})
    [got] = m.extract("plant/Boiler Room/data", b'{"v": 1}', NOW).readings
    assert got.device_id == "boiler_room"
    assert refused(m, b'{"v": 1}', topic="plant/Boiler+Room/data").reason == "invalid_device_id"


def test_metric_transforms_include_exclude() -> None:
    m = mapping(metric_transforms=["colon_to_underscore"], include=["switch_*"], exclude=["*.id"])
    payload = b'{"switch:0": {"id": 0, "apower": 1.5}, "other": 2}'
    [got] = m.extract("plant/p1/data", payload, NOW).readings
    assert got.entries[0][1] == {"switch_0.apower": (1.5, None)}


def test_unit_from_payload_with_alias_and_strange_unit_dropped() -> None:
    m = mapping(unit_paths={"*.Temperature": "TempUnit"}, unit_aliases={"C": "°C"})
    [got] = m.extract("plant/p1/data", b'{"S": {"Temperature": 20}, "TempUnit": "C"}', NOW).readings
    assert got.entries[0][1] == {"S.Temperature": (20.0, "°C")}
    [odd] = m.extract(
        "plant/p1/data", b'{"S": {"Temperature": 20}, "TempUnit": "x\\u0000"}', NOW
    ).readings
    assert odd.entries[0][1] == {"S.Temperature": (20.0, None)}


def test_topic_not_of_the_mapping_is_refused() -> None:
    assert refused(mapping(), b'{"v": 1}', topic="other/p1/data").reason == "unprocessable"


# -- limits ------------------------------------------------------------------------------------
def test_payload_size_limit() -> None:
    big = b'{"v": 1, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}'
    assert refused(mapping(), big).reason == "payload_too_large"
    small = DeclaredMapping(mapping().spec, max_bytes=10)
    assert refused(small, b'{"v": 1.25}').reason == "payload_too_large"


def test_readings_per_message_limit() -> None:
    many = orjson.dumps({f"m{i}": i for i in range(MAX_READINGS + 1)})
    m = DeclaredMapping(mapping().spec, max_bytes=len(many))
    assert refused(m, many).reason == "too_many_readings"
    lines = "\n".join(f"m,d=a v{i}=1,w{i}=2" for i in range(MAX_READINGS // 2 + 1)).encode()
    lp = DeclaredMapping(mapping(payload="line_protocol").spec, max_bytes=len(lines))
    assert refused(lp, lines).reason in {"too_many_readings", "too_many_entries"}


def test_nesting_limit() -> None:
    deep: Any = 1
    for _ in range(20):
        deep = {"a": deep}
    assert refused(mapping(), orjson.dumps(deep)).reason == "invalid_shape"


def test_metric_cache_is_bounded() -> None:
    m = mapping()
    for start in range(0, 6_000, 500):
        payload = orjson.dumps({f"m{i}": 1 for i in range(start, start + 500)})
        m.extract("plant/p1/data", payload, NOW)
    assert len(m._metrics) <= 4_096


def test_every_reason_raised_by_the_mappings_is_listed() -> None:
    raised: set[str] = set()
    for source in (ROOT / "ingest" / "mapping").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "PayloadError"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                raised.add(node.args[0].value)
    assert raised and raised <= set(DEAD_LETTER_REASONS), raised - set(DEAD_LETTER_REASONS)


def test_the_ingest_limits_apply_to_a_built_mapping() -> None:
    strict = mapping(timestamp={"path": "ts", "format": "iso8601"}).limited(
        max_bytes=100, max_future=timedelta(0), max_past=timedelta(minutes=5)
    )
    ahead = b'{"ts": "2026-11-22T12:00:01Z", "v": 1}'
    old = b'{"ts": "2026-11-22T11:54:00Z", "v": 1}'
    assert refused(strict, ahead).reason == "timestamp_out_of_range"
    assert refused(strict, old).reason == "timestamp_out_of_range"
    assert refused(strict, b'{"v": 1, "pad": "' + b"x" * 100 + b'"}').reason == "payload_too_large"
    assert mapping(timestamp={"path": "ts", "format": "iso8601"}).extract(
        "plant/p1/data", ahead, NOW
    )
