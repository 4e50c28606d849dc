"""The sparkplug_b mapping with payloads encoded here from the Sparkplug 3.0 schema."""

from __future__ import annotations

import ast
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ingest.mapping import sparkplug_proto as sp
from ingest.mapping.api import DeviceStatus, Extracted
from ingest.mapping.sparkplug import SparkplugMapping, SparkplugOptions, sparkplug_profile
from ingest.payload import DEAD_LETTER_REASONS, MAX_READINGS, PayloadError

T0_MS = 1767268800000
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)


def payload(seq: int | None, *metrics: dict[str, Any], ts: int | None = T0_MS) -> bytes:
    msg = sp.Payload()
    if ts is not None:
        msg.timestamp = ts
    if seq is not None:
        msg.seq = seq
    for fields in metrics:
        metric = msg.metrics.add()
        for key, value in fields.items():
            if key == "unit":
                metric.properties.keys.append("engUnit")
                metric.properties.values.add(type=sp.STRING, string_value=value)
            elif key == "dataset":
                metric.dataset_value.num_of_columns = 1
                metric.dataset_value.columns.append("c")
            elif key == "template":
                metric.template_value.template_ref = "T"
            else:
                setattr(metric, key, value)
    return msg.SerializeToString()


def bd(value: int) -> dict[str, Any]:
    return {"name": "bdSeq", "datatype": sp.UINT64, "long_value": value}


def nbirth(
    m: SparkplugMapping, *metrics: dict[str, Any], bd_seq: int = 0, edge: str = "e1"
) -> Extracted:
    return m.extract(f"spBv1.0/G/NBIRTH/{edge}", payload(0, bd(bd_seq), *metrics), NOW)


def readings(out: Extracted) -> dict[str, list[tuple[datetime, dict[str, Any]]]]:
    return {r.device_id: r.entries for r in out.readings}


def reason(call: Any) -> str:
    with pytest.raises(PayloadError) as caught:
        call()
    return caught.value.reason


TEMP = {"name": "Inputs/Temp C", "alias": 1, "datatype": sp.DOUBLE, "double_value": 21.5}


# -- births, aliases, data ---------------------------------------------------------------------
def test_birth_defines_aliases_that_data_resolves() -> None:
    m = SparkplugMapping()
    out = nbirth(m, TEMP, {"name": "Node Control/Rebirth", "datatype": sp.BOOLEAN})
    assert out.statuses == [DeviceStatus("e1", "online", "NBIRTH")]
    assert readings(out) == {"e1": [(T0, {"Inputs.Temp_C": (21.5, None)})]}
    data = payload(1, {"alias": 1, "double_value": 22.0}, ts=T0_MS + 1000)
    out = m.extract("spBv1.0/G/NDATA/e1", data, NOW)
    assert readings(out) == {"e1": [(T0 + timedelta(seconds=1), {"Inputs.Temp_C": (22.0, None)})]}
    assert out.statuses == [] and out.notes == []


def test_device_birth_data_and_death() -> None:
    m = SparkplugMapping()
    nbirth(m)
    birth = payload(1, {"name": "Level", "alias": 7, "datatype": sp.FLOAT, "float_value": 0.5})
    out = m.extract("spBv1.0/G/DBIRTH/e1/tank-1", birth, NOW)
    assert out.statuses == [DeviceStatus("e1:tank-1", "online", "DBIRTH")]
    assert readings(out) == {"e1:tank-1": [(T0, {"Level": (0.5, None)})]}
    out = m.extract("spBv1.0/G/DDATA/e1/tank-1", payload(2, {"alias": 7, "float_value": 0.75}), NOW)
    assert readings(out) == {"e1:tank-1": [(T0, {"Level": (0.75, None)})]}
    out = m.extract("spBv1.0/G/DDEATH/e1/tank-1", payload(3), NOW)
    assert out.statuses == [DeviceStatus("e1:tank-1", "offline", "DDEATH")]
    # after DDEATH its aliases are void until a new DBIRTH
    data = payload(4, {"alias": 7, "float_value": 1.0})
    assert reason(lambda: m.extract("spBv1.0/G/DDATA/e1/tank-1", data, NOW)) == (
        "sparkplug_unknown_alias"
    )


def test_data_by_name_without_aliases_uses_the_birth_datatype() -> None:
    m = SparkplugMapping()
    nbirth(m, {"name": "count", "datatype": sp.INT16, "int_value": 3})
    out = m.extract("spBv1.0/G/NDATA/e1", payload(1, {"name": "count", "int_value": 0xFFFE}), NOW)
    assert readings(out) == {"e1": [(T0, {"count": (-2.0, None)})]}


def test_unknown_alias_is_a_dead_letter_naming_the_alias() -> None:
    m = SparkplugMapping()
    data = payload(5, {"alias": 42, "double_value": 1.0})
    with pytest.raises(PayloadError) as caught:
        m.extract("spBv1.0/G/NDATA/e1", data, NOW)
    assert caught.value.reason == "sparkplug_unknown_alias"
    assert "42" in caught.value.message and "NBIRTH" in caught.value.message
    assert m.stats.unknown_aliases == 1


def test_unit_from_the_birth_engunit_property() -> None:
    m = SparkplugMapping()
    out = nbirth(m, {**TEMP, "unit": "°C"})
    assert readings(out)["e1"][0][1] == {"Inputs.Temp_C": (21.5, "°C")}
    out = m.extract("spBv1.0/G/NDATA/e1", payload(1, {"alias": 1, "double_value": 3.0}), NOW)
    assert readings(out)["e1"][0][1] == {"Inputs.Temp_C": (3.0, "°C")}


# -- values ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("datatype", "field", "raw", "value"),
    [
        (sp.INT8, "int_value", 251, -5.0),  # 8-bit two's complement
        (sp.INT8, "int_value", 2**32 - 5, -5.0),  # 32-bit two's complement, the same number
        (sp.INT16, "int_value", 2**32 - 300, -300.0),
        (sp.INT32, "int_value", 2**32 - 40000, -40000.0),
        (sp.INT32, "long_value", 2**64 - 7, -7.0),
        (sp.INT64, "long_value", 2**64 - 1, -1.0),
        (sp.INT64, "long_value", 2**40, float(2**40)),
        (sp.UINT8, "int_value", 255, 255.0),
        (sp.UINT32, "int_value", 2**32 - 1, float(2**32 - 1)),
        (sp.UINT32, "long_value", 2**32 - 1, float(2**32 - 1)),  # where Sparkplug 3.0 puts it
        (sp.UINT64, "long_value", 2**64 - 1, float(2**64 - 1)),
        (sp.FLOAT, "float_value", 1.5, 1.5),
        (sp.DOUBLE, "double_value", -2.25, -2.25),
        (sp.BOOLEAN, "boolean_value", True, 1.0),
        (sp.BOOLEAN, "boolean_value", False, 0.0),
    ],
)
def test_numbers_by_datatype(datatype: int, field: str, raw: Any, value: float) -> None:
    m = SparkplugMapping()
    out = nbirth(m, {"name": "x", "datatype": datatype, field: raw})
    assert readings(out) == {"e1": [(T0, {"x": (value, None)})]}


def test_what_is_not_a_number_is_skipped_and_named_in_the_birth_note() -> None:
    m = SparkplugMapping()
    out = nbirth(
        m,
        {"name": "ok", "datatype": sp.DOUBLE, "double_value": 1.0},
        {"name": "label", "datatype": sp.STRING, "string_value": "x"},
        {"name": "blob", "datatype": sp.BYTES, "bytes_value": b"\x00"},
        {"name": "table", "datatype": sp.DATASET, "dataset": True},
        {"name": "udt", "datatype": sp.TEMPLATE, "template": True},
        {"name": "when", "datatype": sp.DATETIME, "long_value": T0_MS},
        {"name": "nan", "datatype": sp.DOUBLE, "double_value": math.nan},
        {"name": "later", "datatype": sp.INT32, "is_null": True},
        {"name": "fleeting", "datatype": sp.INT32, "int_value": 1, "is_transient": True},
        {"name": "Température", "datatype": sp.INT32, "int_value": 1},
        {"name": "9lives", "datatype": sp.INT32, "int_value": 1},
    )
    assert readings(out) == {"e1": [(T0, {"ok": (1.0, None)})]}
    assert out.notes == [
        "sparkplug G/e1: not stored: 1 Bytes, 1 DataSet, 1 DateTime, 1 String, 1 Template,"
        " 1 invalid name 9lives, 1 invalid name Temp\\xe9rature, 1 non-finite, 1 transient"
    ]
    assert m.stats.skipped_metrics == 10  # with the null, which is normal and not noted
    # data repeats the same metrics: counted, not noted again
    data = payload(1, {"name": "label", "string_value": "y"})
    assert m.extract("spBv1.0/G/NDATA/e1", data, NOW).notes == []
    assert m.stats.skipped_metrics == 11


def test_integer_without_a_known_datatype_is_not_guessed() -> None:
    m = SparkplugMapping()
    data = payload(None, {"name": "mystery", "int_value": 4294967295})
    out = m.extract("spBv1.0/G/NDATA/e1", data, NOW)
    assert out.readings == [] and m.stats.skipped_metrics == 1


def test_historical_metrics_keep_their_own_time_and_payload_time_is_the_default() -> None:
    m = SparkplugMapping()
    nbirth(m, TEMP)
    past = T0_MS - 3_600_000
    data = payload(
        1,
        {"alias": 1, "double_value": 20.0, "timestamp": past, "is_historical": True},
        {"alias": 1, "double_value": 23.0},
    )
    out = m.extract("spBv1.0/G/NDATA/e1", data, NOW)
    assert readings(out) == {
        "e1": [
            (T0 - timedelta(hours=1), {"Inputs.Temp_C": (20.0, None)}),
            (T0, {"Inputs.Temp_C": (23.0, None)}),
        ]
    }
    no_time = payload(2, {"alias": 1, "double_value": 24.0}, ts=None)
    out = m.extract("spBv1.0/G/NDATA/e1", no_time, NOW)
    assert readings(out) == {"e1": [(NOW, {"Inputs.Temp_C": (24.0, None)})]}


def test_an_unrepresentable_timestamp_is_a_dead_letter() -> None:
    m = SparkplugMapping()
    bad = payload(0, bd(0), TEMP, ts=2**63)
    assert reason(lambda: m.extract("spBv1.0/G/NBIRTH/e1", bad, NOW)) == "timestamp_out_of_range"


def test_too_many_readings() -> None:
    m = SparkplugMapping()
    metrics = [
        {"name": "v", "datatype": sp.INT32, "int_value": 1, "timestamp": T0_MS + i}
        for i in range(MAX_READINGS + 1)
    ]
    big = payload(0, bd(0), *metrics)
    assert reason(lambda: m.extract("spBv1.0/G/NBIRTH/e1", big, NOW)) == "too_many_readings"


# -- deaths and bdSeq --------------------------------------------------------------------------
def test_ndeath_takes_the_node_and_its_devices_offline() -> None:
    m = SparkplugMapping()
    nbirth(m, bd_seq=3)
    m.extract("spBv1.0/G/DBIRTH/e1/a", payload(1), NOW)
    m.extract("spBv1.0/G/DBIRTH/e1/b", payload(2), NOW)
    m.extract("spBv1.0/G/DDEATH/e1/b", payload(3), NOW)
    out = m.extract("spBv1.0/G/NDEATH/e1", payload(None, bd(3)), NOW)
    assert out.statuses == [
        DeviceStatus("e1", "offline", "NDEATH"),
        DeviceStatus("e1:a", "offline", "NDEATH"),
    ]
    # the node's aliases die with it
    nodata = payload(4, {"alias": 1, "double_value": 1.0})
    assert reason(lambda: m.extract("spBv1.0/G/NDATA/e1", nodata, NOW)) == (
        "sparkplug_unknown_alias"
    )


def test_stale_ndeath_with_another_bdseq_is_ignored() -> None:
    m = SparkplugMapping()
    nbirth(m, bd_seq=4)
    out = m.extract("spBv1.0/G/NDEATH/e1", payload(None, bd(3)), NOW)
    assert not out.statuses and not out.readings
    assert out.notes == ["sparkplug G/e1: stale NDEATH ignored (bdSeq 3, current NBIRTH bdSeq 4)"]
    assert m.stats.stale_deaths == 1
    # the node is still alive: its data is still resolved
    data = payload(1, {"alias": 1, "double_value": 5.0})
    nbirth(m, TEMP, bd_seq=4)
    assert m.extract("spBv1.0/G/NDATA/e1", data, NOW).readings


def test_ndeath_without_a_birth_seen_is_taken_as_true() -> None:
    out = SparkplugMapping().extract("spBv1.0/G/NDEATH/e1", payload(None, bd(9)), NOW)
    assert out.statuses == [DeviceStatus("e1", "offline", "NDEATH")]


# -- seq ---------------------------------------------------------------------------------------
def test_seq_gap_is_noted_and_counted_not_dead_lettered() -> None:
    m = SparkplugMapping()
    nbirth(m, TEMP)
    m.extract("spBv1.0/G/NDATA/e1", payload(1, {"alias": 1, "double_value": 1.0}), NOW)
    out = m.extract("spBv1.0/G/NDATA/e1", payload(4, {"alias": 1, "double_value": 2.0}), NOW)
    assert out.notes == ["sparkplug G/e1: seq gap in NDATA: expected 2, got 4"]
    assert readings(out)  # still stored
    assert m.stats.seq_gaps == 1
    out = m.extract("spBv1.0/G/DBIRTH/e1/d", payload(5), NOW)  # one seq across N* and D*
    assert out.notes == [] and m.stats.seq_gaps == 1


def test_seq_wraps_after_255_and_a_birth_restarts_it() -> None:
    m = SparkplugMapping()
    nbirth(m)
    for seq in [*range(1, 256), 0, 1]:
        assert m.extract("spBv1.0/G/NDATA/e1", payload(seq), NOW).notes == []
    nbirth(m)  # seq 0 again, no gap
    assert m.extract("spBv1.0/G/NDATA/e1", payload(1), NOW).notes == []
    assert m.stats.seq_gaps == 0


# -- topics, device ids, payloads -------------------------------------------------------------
def test_state_and_commands_are_ignored() -> None:
    m = SparkplugMapping()
    assert m.extract("spBv1.0/STATE/scada1", b'{"online": true}', NOW) == Extracted()
    assert m.extract("spBv1.0/G/NCMD/e1", b"\xff", NOW) == Extracted()
    assert m.extract("spBv1.0/G/DCMD/e1/d", b"\xff", NOW) == Extracted()


@pytest.mark.parametrize(
    "topic", ["spBv1.0/G/NDATA", "spBv1.0/G/NDATA/e1/d", "spBv1.0/G/DDATA/e1", "spBv1.0/G/XYZ/e1"]
)
def test_malformed_topics(topic: str) -> None:
    assert reason(lambda: SparkplugMapping().extract(topic, payload(0), NOW)) == (
        "sparkplug_invalid_topic"
    )


def test_match_names_the_levels() -> None:
    m = SparkplugMapping()
    assert m.filter == "spBv1.0/#"
    assert m.match("spBv1.0/G/DDATA/e1/d") == {
        "group": "G",
        "type": "DDATA",
        "edge": "e1",
        "device": "d",
    }
    assert m.match("devices/x/telemetry") is None


def test_not_protobuf_and_too_large() -> None:
    m = SparkplugMapping()
    assert reason(lambda: m.extract("spBv1.0/G/NDATA/e1", b"\xff\xff", NOW)) == (
        "sparkplug_invalid_payload"
    )
    small = SparkplugMapping(SparkplugOptions(max_payload_bytes=1024))
    assert reason(lambda: small.extract("spBv1.0/G/NDATA/e1", b"\x00" * 1025, NOW)) == (
        "payload_too_large"
    )


@pytest.mark.parametrize(
    ("topic", "detail"),
    [
        ("spBv1.0/G/NBIRTH/Edge Node 1", "edge node id Edge Node 1 is not a valid device id"),
        ("spBv1.0/G/DBIRTH/e1/pump one", "edge node + device id e1:pump one is not"),
        ("spBv1.0/G/NDATA/a:b", "edge node id a:b contains the separator ':'"),
        ("spBv1.0/G/DDATA/a/b:c", "device id b:c contains the separator ':'"),
    ],
)
def test_invalid_device_ids_are_dead_letters_never_rewritten(topic: str, detail: str) -> None:
    m = SparkplugMapping()
    with pytest.raises(PayloadError) as caught:
        m.extract(topic, payload(0, bd(0)), NOW)
    assert caught.value.reason == "invalid_device_id"
    assert detail in caught.value.message
    assert not m.state.nodes  # nothing remembered of a refused message


def test_group_prefix_and_separator_options() -> None:
    m = SparkplugMapping(SparkplugOptions(include_group=True, separator="."))
    out = m.extract("spBv1.0/Plant1/DBIRTH/e1/d", payload(1), NOW)
    assert out.statuses == [DeviceStatus("Plant1.e1.d", "online", "DBIRTH")]


# -- bounds ------------------------------------------------------------------------------------
def test_edge_nodes_are_bounded_least_recently_heard_first() -> None:
    m = SparkplugMapping(SparkplugOptions(max_edge_nodes=2))
    for edge in ("a", "b"):
        nbirth(m, TEMP, edge=edge)
    m.extract("spBv1.0/G/NDATA/a", payload(1, {"alias": 1, "double_value": 1.0}), NOW)  # a used
    nbirth(m, TEMP, edge="c")  # evicts b
    assert [key[1] for key in m.state.nodes] == ["a", "c"]
    assert m.stats.evicted_nodes == 1
    data = payload(1, {"alias": 1, "double_value": 1.0})
    assert reason(lambda: m.extract("spBv1.0/G/NDATA/b", data, NOW)) == "sparkplug_unknown_alias"
    assert readings(
        m.extract("spBv1.0/G/NDATA/a", payload(2, {"alias": 1, "double_value": 2.0}), NOW)
    )


def test_metric_definitions_per_node_are_bounded() -> None:
    m = SparkplugMapping(SparkplugOptions(max_metrics_per_node=3))
    metrics = [
        {"name": f"m{i}", "alias": i, "datatype": sp.INT32, "int_value": i} for i in range(5)
    ]
    nbirth(m, *metrics)
    node = m.state.nodes[("G", "e1")]
    assert len(node.metrics) == 3 and m.stats.evicted_metrics == 3  # bdSeq is one too
    assert (
        reason(
            lambda: m.extract("spBv1.0/G/NDATA/e1", payload(1, {"alias": 0, "int_value": 1}), NOW)
        )
        == "sparkplug_unknown_alias"
    )
    out = m.extract("spBv1.0/G/NDATA/e1", payload(2, {"alias": 4, "int_value": 9}), NOW)
    assert readings(out) == {"e1": [(T0, {"m4": (9.0, None)})]}


def test_online_devices_per_node_are_bounded() -> None:
    m = SparkplugMapping(SparkplugOptions(max_devices_per_node=2))
    nbirth(m)
    for seq, device in enumerate(("d1", "d2", "d3"), start=1):
        m.extract(f"spBv1.0/G/DBIRTH/e1/{device}", payload(seq), NOW)
    assert list(m.state.nodes[("G", "e1")].devices) == ["d2", "d3"]


# -- the profile -------------------------------------------------------------------------------
def test_profile_one_mapping_or_one_per_group() -> None:
    [everything] = sparkplug_profile({})
    assert (everything.name, everything.filter) == ("sparkplug_b", "spBv1.0/#")
    mappings = sparkplug_profile({"groups": ["Plant1", "Plant2", "Plant1"]})
    assert [(x.name, x.filter) for x in mappings] == [
        ("sparkplug_b.Plant1", "spBv1.0/Plant1/#"),
        ("sparkplug_b.Plant2", "spBv1.0/Plant2/#"),
    ]
    assert mappings[0].match("spBv1.0/Plant2/NDATA/e1") is None
    for bad in ({"groups": ["a/#"]}, {"separator": "/"}, {"max_edge_nodes": 0}, {"typo": 1}):
        with pytest.raises(ValidationError):
            sparkplug_profile(bad)


def test_every_reason_raised_by_the_sparkplug_modules_is_listed() -> None:
    root = Path(__file__).resolve().parents[2] / "ingest" / "mapping"
    raised = {
        node.args[0].value
        for source in root.glob("sparkplug*.py")
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "PayloadError"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    assert "sparkplug_unknown_alias" in raised
    assert raised <= set(DEAD_LETTER_REASONS), raised - set(DEAD_LETTER_REASONS)
