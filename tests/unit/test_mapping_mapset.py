"""MappingSet routing: overlapping patterns by the documented rule, the bridge's own topics
never routed, filters each once; and mapping files read and written back."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ingest.mapping.declared import DeclaredMapping
from ingest.mapping.mapset import MappingSet
from ingest.mapping.profiles import build_profile, profile_names, register_profile
from ingest.mapping.spec import MappingSpec
from ingest.mapping.toml_file import MappingFile, MappingFileError, dumps, loads

ALL = ["tasmota", "shelly_gen2", "zigbee2mqtt", "esphome", "influx_line"]


def declared(name: str, topic: str, **spec: Any) -> DeclaredMapping:
    base = {"name": name, "topic": topic, "payload": "json_leaves"}
    return DeclaredMapping(MappingSpec.model_validate(base | spec))


def everything(own_prefix: str = "") -> MappingSet:
    return MappingSet([m for p in ALL for m in build_profile(p)], own_prefix=own_prefix)


@pytest.mark.parametrize(
    ("topic", "name"),
    [
        ("tele/plug/SENSOR", "tasmota.sensor"),
        ("tele/plug/STATE", "tasmota.state"),
        ("tele/plug/LWT", "tasmota.lwt"),
        ("tele/plug/RESULT", None),
        ("shelly1/events/rpc", "shelly_gen2.rpc"),
        ("shelly1/online", "shelly_gen2.online"),
        ("zigbee2mqtt/lamp", "zigbee2mqtt.device"),
        ("zigbee2mqtt/lamp/availability", "zigbee2mqtt.availability"),
        # a zigbee2mqtt device named like an ESPHome or Shelly suffix stays zigbee2mqtt's
        ("zigbee2mqtt/status", "zigbee2mqtt.device"),
        ("zigbee2mqtt/online", "zigbee2mqtt.device"),
        ("zigbee2mqtt/bridge/state", None),
        ("node1/sensor/t/state", "esphome.sensor"),
        ("node1/status", "esphome.status"),
        ("telegraf/w1/cpu", "influx_line"),
        # the bridge's own and the broker's topics, whatever would match them
        ("devices/status", None),
        ("devices/online", None),
        ("devices/d1/telemetry", None),
        ("$SYS/broker/uptime", None),
        ("", None),
    ],
)
def test_routes(topic: str, name: str | None) -> None:
    mapping = everything().route(topic)
    assert (mapping.name if mapping else None) == name


def test_own_topics_under_the_deployment_prefix() -> None:
    mappings = MappingSet([declared("any", "{a}/{device}/{c}")], own_prefix="site1")
    assert mappings.route("site1/devices/telemetry") is None
    assert mappings.route("site1/devicesX/telemetry") is not None
    assert mappings.route("devices/d1/telemetry") is not None  # not ours under a prefix


def test_more_literal_levels_win_then_literal_first_then_fixed_length_then_order() -> None:
    wide = declared("wide", "{a}/{device}/data")
    narrow = declared("narrow", "plant/{device}/data")
    multi = declared("multi", "plant/{device#}")
    later = declared("later", "plant/{device}/data", exclude_topics=["plant/x/data"])
    mappings = MappingSet([wide, multi, later, narrow])
    assert mappings.names() == ["later", "narrow", "multi", "wide"]
    assert mappings.route("plant/p1/data") is later
    assert mappings.route("plant/x/data") is narrow  # excluded from `later` only
    assert mappings.route("other/p1/data") is wide
    assert mappings.route("plant/p1") is multi


def test_filters_each_once_and_none_covered_by_another() -> None:
    filters = everything().filters()
    assert len(filters) == len(set(filters))
    assert "zigbee2mqtt/#" in filters
    assert not [f for f in filters if f != "zigbee2mqtt/#" and f.startswith("zigbee2mqtt/")]
    assert MappingSet([declared("a", "x/{device#}"), declared("b", "x/{device}/y")]).filters() == [
        "x/#"
    ]


def test_names_are_unique() -> None:
    with pytest.raises(ValueError, match="two mappings"):
        MappingSet([declared("a", "x/{device}"), declared("a", "y/{device}")])


def test_profile_registry() -> None:
    assert set(ALL) <= set(profile_names())
    with pytest.raises(ValueError, match="unknown profile"):
        build_profile("tasmota2")
    with pytest.raises(ValueError, match="profile tasmota"):
        build_profile("tasmota", colour="blue")
    with pytest.raises(ValueError, match="already registered"):
        register_profile("tasmota", lambda: [])


# -- mapping files -----------------------------------------------------------------------------
FILE = """
profiles = ["tasmota", "influx_line"]

[profile_options.influx_line]
topic = "telegraf/{host}"
device_tag = "host"
metric_style = "measurement.field"

[[mapping]]
name = "boiler"
topic = "plant/{device}/data"
payload = "json_paths"
paths = { flow_temp = "t.flow", "return temp" = "t.return" }
timestamp = { path = "at", format = "unix_ms" }
units = { "*_temp" = "°C" }

[[mapping]]
name = "esp.extra"
topic = "{device}/sensor/{name}/state"
exclude_topics = ["bad/sensor/{name}/state"]
payload = "bare_number"
metric_level = "name"
"""


def test_file_round_trip() -> None:
    with pytest.raises(MappingFileError, match=r"mapping boiler: paths: .*invalid metric name"):
        loads(FILE)
    loaded = loads(FILE.replace('"return temp"', "return_temp"))
    assert loaded.profiles == ("tasmota", "influx_line")
    assert [s.name for s in loaded.specs] == ["boiler", "esp.extra"]
    assert loads(dumps(loaded)) == loaded
    names = [m.name for m in loaded.mappings()]
    assert names == [
        "tasmota.sensor",
        "tasmota.state",
        "tasmota.lwt",
        "influx_line",
        "boiler",
        "esp.extra",
    ]
    built = MappingSet(loaded.mappings())
    assert built.route("telegraf/gw1").name == "influx_line"  # type: ignore[union-attr]


def test_profile_specs_round_trip_through_a_file() -> None:
    specs = tuple(m.spec for p in ALL for m in build_profile(p) if isinstance(m, DeclaredMapping))
    again = loads(dumps(MappingFile(specs=specs)))
    assert again.specs == specs


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("profiles = [", "not TOML"),
        ("colour = 1", "unknown keys"),
        ("profiles = 'tasmota'", "list of profile names"),
        ('profiles = ["nope"]', "unknown profile"),
        ("[profile_options.esphome]\nbinary_sensors = true", "not switched on"),
        ('profiles = ["esphome"]\n[profile_options.esphome]\nwings = 2', "profile esphome"),
        ("[[mapping]]\nname = 'x'", "mapping x"),
        (
            "[[mapping]]\nname='a'\ntopic='a/{device}'\npayload='json_leaves'\n"
            "[[mapping]]\nname='a'\ntopic='b/{device}'\npayload='json_leaves'",
            "share a name",
        ),
    ],
)
def test_file_errors(text: str, says: str) -> None:
    with pytest.raises(MappingFileError, match=says):
        loads(text).mappings()


def test_the_documented_example_file_loads() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "mappings.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```toml\n(.*?)```", doc, re.S)
    loaded = loads(block)
    assert [m.name for m in loaded.mappings()][-1] == "boiler"


def test_a_stateful_mappings_filter_is_never_shared() -> None:
    """Sparkplug's births define how later messages are read: each ingest needs them all."""
    mappings = MappingSet([*build_profile("tasmota"), *build_profile("sparkplug_b")])
    assert mappings.unshared_filters() == {"spBv1.0/#"}
