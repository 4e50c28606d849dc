"""The built-in profiles against messages in the shapes their projects document.

The samples live in tests/data/firmware/<profile>/ with a SOURCE.md naming the documentation
each shape comes from. Each case: the topic it arrives on, the sample, what the profile
makes of it (readings per device as {metric: (value, unit)} with their time, or statuses).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingest.mapping.api import Extracted
from ingest.mapping.mapset import MappingSet
from ingest.mapping.profiles import build_profile
from ingest.payload import PayloadError

DATA = Path(__file__).resolve().parents[1] / "data" / "firmware"
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
T = datetime(2026, 11, 22, 11, 59, 0, tzinfo=UTC)


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def extract(profile: str, topic: str, payload: bytes, /, **options: Any) -> Extracted:
    mappings = MappingSet(build_profile(profile, **options))
    mapping = mappings.route(topic)
    assert mapping is not None, f"{topic} routes to no mapping of {profile}"
    return mapping.extract(topic, payload, NOW)


def readings(result: Extracted) -> dict[str, list[tuple[datetime, dict[str, Any]]]]:
    return {r.device_id: r.entries for r in result.readings}


def statuses(result: Extracted) -> list[tuple[str, str]]:
    return [(s.device_id, s.status) for s in result.statuses]


def test_every_profile_dir_names_its_sources() -> None:
    for folder in DATA.iterdir():
        text = (folder / "SOURCE.md").read_text(encoding="utf-8")
        assert "https://" in text, folder.name


# -- Tasmota ---------------------------------------------------------------------------------
def test_tasmota_sensor_energy_and_climate() -> None:
    result = extract(
        "tasmota", "tele/tasmota_5C1A2B/SENSOR", sample("tasmota/sensor_pow_am2301.json")
    )
    assert readings(result) == {
        "tasmota_5C1A2B": [
            (
                T,
                {
                    "ENERGY.Total": (1.956, "kWh"),
                    "ENERGY.Yesterday": (0.054, "kWh"),
                    "ENERGY.Today": (0.049, "kWh"),
                    "ENERGY.Period": (0.0, None),
                    "ENERGY.Power": (9.0, "W"),
                    "ENERGY.ApparentPower": (21.0, "VA"),
                    "ENERGY.ReactivePower": (19.0, "var"),
                    "ENERGY.Factor": (0.43, None),
                    "ENERGY.Voltage": (231.0, "V"),
                    "ENERGY.Current": (0.089, "A"),
                    "AM2301.Temperature": (21.4, "°C"),
                    "AM2301.Humidity": (40.1, "%"),
                    "AM2301.DewPoint": (7.3, "°C"),
                },
            )
        ]
    }


def test_tasmota_local_time_read_in_the_configured_zone() -> None:
    payload = sample("tasmota/sensor_ds18b20_fahrenheit.json")  # Time 12:59 local, no offset
    berlin = extract("tasmota", "tele/pool/SENSOR", payload, timezone="Europe/Berlin")
    assert readings(berlin) == {
        "pool": [
            (T, {"DS18B20-1.Temperature": (70.9, "°F"), "DS18B20-2.Temperature": (71.2, "°F")})
        ]
    }
    # the default reads it as UTC: 12:59Z is within the hour ahead the bridge accepts
    utc = extract("tasmota", "tele/pool/SENSOR", payload)
    assert readings(utc)["pool"][0][0] == datetime(2026, 11, 22, 12, 59, tzinfo=UTC)


def test_tasmota_state_keeps_the_device_figures() -> None:
    result = extract("tasmota", "tele/plug1/STATE", sample("tasmota/state.json"))
    assert readings(result) == {
        "plug1": [
            (
                T,
                {
                    "UptimeSec": (3723.0, "s"),
                    "Heap": (26.0, None),
                    "LoadAvg": (19.0, None),
                    "POWER": (1.0, None),
                    "Wifi.AP": (1.0, None),
                    "Wifi.Channel": (6.0, None),
                    "Wifi.RSSI": (76.0, "%"),
                    "Wifi.Signal": (-62.0, "dBm"),
                    "Wifi.LinkCount": (1.0, None),
                },
            )
        ]
    }


@pytest.mark.parametrize(("name", "status"), [("lwt_online", "online"), ("lwt_offline", "offline")])
def test_tasmota_lwt(name: str, status: str) -> None:
    result = extract("tasmota", "tele/plug1/LWT", sample(f"tasmota/{name}.txt"))
    assert statuses(result) == [("plug1", status)] and not result.readings


# -- Shelly Gen2 -----------------------------------------------------------------------------
SHELLY = "shellyplus1pm-a8032ab12345"


def test_shelly_notify_status() -> None:
    result = extract(
        "shelly_gen2", f"{SHELLY}/events/rpc", sample("shelly_gen2/notify_status_switch.json")
    )
    assert readings(result) == {
        SHELLY: [
            (
                datetime(2026, 11, 22, 11, 59, 0, 120000, tzinfo=UTC),
                {
                    "switch_0.apower": (12.3, "W"),
                    "switch_0.voltage": (230.1, "V"),
                    "switch_0.current": (0.058, "A"),
                    "switch_0.aenergy.total": (12.5, "Wh"),
                },
            )
        ]
    }


def test_shelly_notify_full_status() -> None:
    result = extract(
        "shelly_gen2", f"{SHELLY}/events/rpc", sample("shelly_gen2/notify_full_status.json")
    )
    [(at, values)] = readings(result)[SHELLY]
    assert at == datetime(2026, 11, 22, 11, 59, 0, 500000, tzinfo=UTC)
    assert values["switch_0.apower"] == (8.9, "W")
    assert values["switch_0.temperature.tC"] == (42.1, "°C")
    assert values["wifi.rssi"] == (-58.0, "dBm")
    assert values["sys.uptime"] == (3723.0, "s")
    # booleans are off by default, ids and per-minute arrays and revision counters excluded
    assert not {"switch_0.output", "input_0.state", "switch_0.id", "sys.cfg_rev", "ts"} & set(
        values
    )
    assert not any("by_minute" in name for name in values)


def test_shelly_other_notifications_are_ignored_not_dead_lettered() -> None:
    result = extract("shelly_gen2", f"{SHELLY}/events/rpc", sample("shelly_gen2/notify_event.json"))
    assert not result.readings and not result.statuses and result.notes


def test_shelly_device_is_the_topic_unless_src_is_asked_for() -> None:
    payload = sample("shelly_gen2/notify_status_switch.json")
    by_topic = extract("shelly_gen2", "plug-7/events/rpc", payload)
    assert list(readings(by_topic)) == ["plug-7"]  # the payload's src does not move it
    by_src = extract("shelly_gen2", "plug-7/events/rpc", payload, device_from="src")
    assert list(readings(by_src)) == [SHELLY]


@pytest.mark.parametrize(
    ("name", "status"), [("online_true", "online"), ("online_false", "offline")]
)
def test_shelly_online(name: str, status: str) -> None:
    result = extract("shelly_gen2", f"{SHELLY}/online", sample(f"shelly_gen2/{name}.txt"))
    assert statuses(result) == [(SHELLY, status)]


# -- zigbee2mqtt -----------------------------------------------------------------------------
def test_zigbee2mqtt_sensor() -> None:
    result = extract(
        "zigbee2mqtt", "zigbee2mqtt/0x00158d0001a2b3c4", sample("zigbee2mqtt/weather_sensor.json")
    )
    assert readings(result) == {
        "0x00158d0001a2b3c4": [
            (
                NOW,
                {
                    "temperature": (21.5, "°C"),
                    "humidity": (55.0, "%"),
                    "pressure": (1012.3, "hPa"),
                    "battery": (97.0, "%"),
                    "voltage": (2995.0, "mV"),
                    "linkquality": (120.0, None),
                },
            )
        ]
    }


def test_zigbee2mqtt_on_off_and_booleans_only_when_asked() -> None:
    plain = extract("zigbee2mqtt", "zigbee2mqtt/bulb", sample("zigbee2mqtt/bulb.json"))
    assert "state" not in readings(plain)["bulb"][0][1]
    asked = extract(
        "zigbee2mqtt", "zigbee2mqtt/bulb", sample("zigbee2mqtt/bulb.json"), booleans=True
    )
    assert readings(asked)["bulb"][0][1]["state"] == (1.0, None)
    motion = extract(
        "zigbee2mqtt", "zigbee2mqtt/hall", sample("zigbee2mqtt/motion.json"), booleans=True
    )
    assert readings(motion)["hall"][0][1]["occupancy"] == (1.0, None)


def test_zigbee2mqtt_action_only_message_has_no_readings() -> None:
    result = extract("zigbee2mqtt", "zigbee2mqtt/button", sample("zigbee2mqtt/button_action.json"))
    assert not result.readings and result.notes


def test_zigbee2mqtt_friendly_name_that_is_no_id_is_refused() -> None:
    with pytest.raises(PayloadError) as err:
        extract("zigbee2mqtt", "zigbee2mqtt/kitchen/floor light", sample("zigbee2mqtt/bulb.json"))
    assert err.value.reason == "invalid_device_id"
    assert (
        "topic level {device}" in err.value.message and "kitchen/floor light" in err.value.message
    )


def test_zigbee2mqtt_friendly_name_with_opted_in_transforms() -> None:
    result = extract(
        "zigbee2mqtt",
        "zigbee2mqtt/Kitchen/Floor Light",
        sample("zigbee2mqtt/bulb.json"),
        device_transforms=["lowercase", "replace_spaces", "replace_slashes"],
    )
    assert list(readings(result)) == ["kitchen.floor_light"]


@pytest.mark.parametrize(
    ("topic", "name", "expected"),
    [
        ("zigbee2mqtt/hall/availability", "availability.json", ("hall", "online")),
        ("zigbee2mqtt/hall/availability", "availability_legacy.txt", ("hall", "offline")),
        ("zigbee2mqtt/floor1/hall/availability", "availability.json", ("floor1/hall", None)),
    ],
)
def test_zigbee2mqtt_availability(topic: str, name: str, expected: tuple[str, str | None]) -> None:
    payload = sample(f"zigbee2mqtt/{name}")
    if expected[1] is None:  # a name with a slash: refused like a reading would be
        with pytest.raises(PayloadError, match="invalid_device_id"):
            extract("zigbee2mqtt", topic, payload)
        return
    assert statuses(extract("zigbee2mqtt", topic, payload)) == [expected]


@pytest.mark.parametrize(
    "topic",
    [
        "zigbee2mqtt/bridge/state",
        "zigbee2mqtt/bridge/devices",
        "zigbee2mqtt/bridge/response/device/rename",
        "zigbee2mqtt/bulb/set",
        "zigbee2mqtt/bulb/set/brightness",
        "zigbee2mqtt/bulb/get",
    ],
)
def test_zigbee2mqtt_bridge_and_command_topics_are_not_readings(topic: str) -> None:
    assert MappingSet(build_profile("zigbee2mqtt")).route(topic) is None


# -- ESPHome ---------------------------------------------------------------------------------
def test_esphome_sensor_state() -> None:
    result = extract(
        "esphome",
        "livingroom/sensor/living_room_temperature/state",
        sample("esphome/sensor_state.txt"),
    )
    assert readings(result) == {"livingroom": [(NOW, {"living_room_temperature": (21.5, None)})]}


def test_esphome_nan_is_no_reading() -> None:
    result = extract("esphome", "livingroom/sensor/t/state", sample("esphome/sensor_nan.txt"))
    assert not result.readings and result.notes


def test_esphome_binary_sensor_only_when_asked() -> None:
    topic = "livingroom/binary_sensor/window/state"
    assert MappingSet(build_profile("esphome")).route(topic) is None
    result = extract("esphome", topic, sample("esphome/binary_sensor_on.txt"), binary_sensors=True)
    assert readings(result) == {"livingroom": [(NOW, {"window": (1.0, None)})]}


@pytest.mark.parametrize(
    ("name", "status"), [("status_online", "online"), ("status_offline", "offline")]
)
def test_esphome_status(name: str, status: str) -> None:
    result = extract("esphome", "livingroom/status", sample(f"esphome/{name}.txt"))
    assert statuses(result) == [("livingroom", status)]


def test_esphome_text_is_refused() -> None:
    with pytest.raises(PayloadError) as err:
        extract("esphome", "livingroom/sensor/t/state", b"warm")
    assert err.value.reason == "validation_error"


# -- InfluxDB line protocol -----------------------------------------------------------------
def test_influx_telegraf_metrics_device_from_topic() -> None:
    result = extract(
        "influx_line", "telegraf/node1/cpu", sample("influx_line/telegraf_cpu_mem.txt")
    )
    assert readings(result) == {
        "node1": [
            (
                T,
                {
                    "usage_idle": (97.5, None),
                    "usage_user": (1.5, None),
                    "usage_system": (1.0, None),
                    "used_percent": (41.2, None),
                    "available": (8329027584.0, None),
                    "free": (1203781632.0, None),
                },
            )
        ]
    }


def test_influx_measurement_prefix_and_device_from_tag() -> None:
    result = extract(
        "influx_line",
        "telegraf/gateway-3",
        sample("influx_line/weather_stations.txt"),
        topic="telegraf/{gateway}",
        device_tag="device",
        metric_style="measurement.field",
    )
    assert readings(result) == {
        "w1": [
            (
                T,
                {
                    "weather.temperature": (21.5, None),
                    "weather.humidity": (40.0, None),
                    "weather.ok": (1.0, None),
                },
            ),
            (datetime(2026, 11, 22, 11, 59, 5, tzinfo=UTC), {"weather.temperature": (21.6, None)}),
        ],
        "w2": [
            (
                datetime(2026, 11, 22, 11, 58, 0, tzinfo=UTC),
                {"weather.temperature": (19.25, None), "weather.humidity": (52.0, None)},
            ),
        ],
    }


def test_influx_precision_seconds() -> None:
    result = extract("influx_line", "telegraf/d1/cpu", b"m v=1 1795348740", precision="s")
    assert readings(result) == {"d1": [(T, {"v": (1.0, None)})]}


def test_influx_missing_device_tag_is_refused() -> None:
    with pytest.raises(PayloadError) as err:
        extract("influx_line", "t/x", b"m,site=a v=1", topic="t/{x}", device_tag="device")
    assert err.value.reason == "invalid_device_id" and "tag device" in err.value.message
