"""The hand-checked path for common payloads (ingest/payload.py ``_common_entries``) accepts
exactly what the pydantic models accept, with the same result, and steps aside otherwise."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ingest.payload import _common_entries, _remember_units, _validated_entries

ACCEPTED: list[Any] = [
    {"ts": "2026-01-01T12:00:00.250Z", "values": {"t": {"value": 21.5, "unit": "°C"}}},
    {"ts": 1767268800000, "values": {"t": 1, "h": -2.5e-7}},
    {"values": {"t": {"value": 3, "unit": None}}},
    {"ts": None, "values": {"t": 1.0}},
    {"temperature": 23.5, "humidity": 45},
    {"ts": "2026-01-01T12:00:00+02:00", "a.b-c_d": 0},
    {"ts": 1767268800000, "ts2": 4},
]
# the models decide these (a refusal, or a form the fast path leaves to them)
DEFERRED: list[Any] = [
    {"ts": 1767268800000},  # no metric at all
    {"values": {}},
    {"values": {"t": 1}, "extra": 1},
    {"values": {"t": {"value": 1, "foo": "x"}}},
    {"values": {"t": {"value": 1}}},
    {"values": {"t": {"value": 1, "unit": ["x"]}}},
    {"values": {"t": {"value": 1, "unit": "new-unit"}}},  # first sight: the model checks it
    {"values": {"t": {"value": True, "unit": "°C"}}},
    {"values": {"t": True}},
    {"values": {"t": "1"}},
    {"values": {"9bad": 1}},
    {"values": {"t": 1}, "ts": 1.5},
    {"values": {"t": 1}, "ts": True},
    {"values": {"t": 1}, "ts": "yesterday"},
    {"values": [1]},
    [{"values": {"t": 1}}],
    "text",
]


@pytest.fixture(autouse=True)
def known_unit() -> None:
    _remember_units([(None, {"t": (0.0, "°C")})])


@pytest.mark.parametrize("doc", ACCEPTED, ids=lambda d: orjson.dumps(d).decode()[:60])
def test_accepted_the_same_as_by_the_models(doc: Any) -> None:
    assert _common_entries(doc) == _validated_entries(doc)


@pytest.mark.parametrize("doc", DEFERRED, ids=lambda d: orjson.dumps(d).decode()[:60])
def test_anything_else_is_left_to_the_models(doc: Any) -> None:
    assert _common_entries(doc) is None


def test_a_flat_ts_is_never_a_metric_even_once_seen_as_one() -> None:
    assert _common_entries({"values": {"ts": 1}})  # a metric called "ts" in the values form
    [(ts, values)] = _common_entries({"ts": 1767268800000, "t": 2}) or [(None, {})]
    assert ts is not None and values == {"t": (2.0, None)}
