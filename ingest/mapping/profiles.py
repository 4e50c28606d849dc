"""Built-in profiles: the mappings for a firmware, switched on by name (pure).

``build_profile("tasmota")`` returns the mappings of every topic that firmware publishes
readings or status on. A profile's options are keyword arguments of its factory
(``build_profile("influx_line", topic="telegraf/{host}", device_tag="host")``). Other
modules add profiles with :func:`register_profile`.

Where each profile's topics and payload shapes come from is named in
``tests/data/firmware/<profile>/SOURCE.md`` beside the sample messages it is tested with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ingest.mapping.api import Mapping
from ingest.mapping.declared import DeclaredMapping
from ingest.mapping.sparkplug import sparkplug_profile
from ingest.mapping.spec import MappingSpec

ProfileFactory = Callable[..., Sequence[Mapping]]
_PROFILES: dict[str, ProfileFactory] = {}


def register_profile(name: str, factory: ProfileFactory) -> None:
    """Make ``factory(**options)`` available as profile ``name``; a name is taken once."""
    if name in _PROFILES and _PROFILES[name] is not factory:
        raise ValueError(f"profile {name!r} is already registered")
    _PROFILES[name] = factory


def profile_names() -> list[str]:
    return sorted(_PROFILES)


def build_profile(name: str, **options: Any) -> list[Mapping]:
    """The mappings of profile ``name``; ValueError for an unknown name or option."""
    factory = _PROFILES.get(name)
    if factory is None:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(sorted(_PROFILES))}")
    try:
        return list(factory(**options))
    except TypeError as exc:  # an option the factory does not take
        raise ValueError(f"profile {name}: {exc}") from None


def _declared(specs: list[dict[str, Any]]) -> list[Mapping]:
    return [DeclaredMapping(MappingSpec.model_validate(spec)) for spec in specs]


# Tasmota (tasmota.github.io/docs/MQTT/): tele/<topic>/SENSOR every TelePeriod, STATE with
# the device's own figures, LWT Online/Offline (retained). Time is the device's local time
# without an offset, so it is read in ``timezone`` (UTC unless told).
_TASMOTA_UNITS = {
    "ENERGY.Power": "W",
    "ENERGY.ApparentPower": "VA",
    "ENERGY.ReactivePower": "var",
    "ENERGY.Voltage*": "V",
    "ENERGY.Current*": "A",
    "ENERGY.Total": "kWh",
    "ENERGY.Today": "kWh",
    "ENERGY.Yesterday": "kWh",
    "*.Humidity": "%",
    "*.Illuminance": "lx",
}


def tasmota(timezone: str = "UTC", device_transforms: Sequence[str] = ()) -> list[Mapping]:
    device = {"level": "device", "transforms": list(device_transforms)}
    time = {"path": "Time", "format": "iso8601", "timezone": timezone}
    return _declared(
        [
            {
                "name": "tasmota.sensor",
                "topic": "tele/{device}/SENSOR",
                "payload": "json_leaves",
                "device": device,
                "timestamp": time,
                "units": _TASMOTA_UNITS,
                "unit_paths": {
                    "*.Temperature": "TempUnit",
                    "*.DewPoint": "TempUnit",
                    "*.Pressure": "PressureUnit",
                },
                "unit_aliases": {"C": "°C", "F": "°F"},
            },
            {
                "name": "tasmota.state",
                "topic": "tele/{device}/STATE",
                "payload": "json_leaves",
                "device": device,
                "timestamp": time,
                "booleans": True,  # POWER "ON"/"OFF"
                "include": ["UptimeSec", "Heap", "LoadAvg", "POWER*", "Dimmer", "Wifi.*"],
                "units": {"Wifi.RSSI": "%", "Wifi.Signal": "dBm", "UptimeSec": "s"},
            },
            {
                "name": "tasmota.lwt",
                "topic": "tele/{device}/LWT",
                "payload": "status",
                "device": device,
                "status_words": {"Online": "online", "Offline": "offline"},
            },
        ]
    )


# Shelly Gen2+ (shelly-api-docs.shelly.cloud/gen2/General/Notifications): JSON-RPC
# notifications on <topic prefix>/events/rpc; <topic prefix>/online is true/false (retained).
# Component keys hold ':' ("switch:0"), which a metric name cannot: they become "switch_0".
# The device is the topic prefix (by default the Shelly's id, which is also its `src`): the
# broker's ACL ties a topic to a device's login, while `src` is whatever the payload says.
# device_from="src" trusts the payload instead (for prefixes that are not ids).
def shelly_gen2(device_from: str = "topic") -> list[Mapping]:
    if device_from not in ("src", "topic"):
        raise ValueError("shelly_gen2 device_from is 'src' or 'topic'")
    device = {"path": "src"} if device_from == "src" else {"level": "device"}
    return _declared(
        [
            {
                "name": "shelly_gen2.rpc",
                "topic": "{device}/events/rpc",
                "payload": "json_leaves",
                "device": device,
                "only_if": {"method": ["NotifyStatus", "NotifyFullStatus"]},
                "root": "params",
                "timestamp": {"path": "params.ts", "format": "unix_s"},
                "metric_transforms": ["colon_to_underscore"],
                "exclude": ["ts", "*.id", "*.by_minute.*", "*.minute_ts", "sys.*_rev"],
                "units": {
                    "*.apower": "W",
                    "*.voltage": "V",
                    "*.current": "A",
                    "*.freq": "Hz",
                    "*.aenergy.total": "Wh",
                    "*.temperature.tC": "°C",
                    "*.temperature.tF": "°F",
                    "wifi.rssi": "dBm",
                    "sys.uptime": "s",
                },
            },
            {
                "name": "shelly_gen2.online",
                "topic": "{device}/online",
                "payload": "status",
                "status_words": {"true": "online", "false": "offline"},
            },
        ]
    )


# zigbee2mqtt (zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html): a device's state on
# <base>/<friendly name>, its availability on <base>/<friendly name>/availability. A friendly
# name may hold '/' (and spaces): such a name is refused as a device id unless the profile is
# given device_transforms (replace_spaces, replace_slashes, lowercase).
_Z2M_UNITS = {
    "temperature": "°C",
    "humidity": "%",
    "battery": "%",
    "pressure": "hPa",
    "voltage": "mV",
    "illuminance_lux": "lx",
    "power": "W",
    "energy": "kWh",
    "current": "A",
    "co2": "ppm",
}


def zigbee2mqtt(
    base_topic: str = "zigbee2mqtt", booleans: bool = False, device_transforms: Sequence[str] = ()
) -> list[Mapping]:
    device = {"level": "device", "transforms": list(device_transforms)}
    return _declared(
        [
            {
                "name": "zigbee2mqtt.device",
                "topic": f"{base_topic}/{{device#}}",
                "exclude_topics": [
                    f"{base_topic}/bridge/#",
                    f"{base_topic}/{{name#}}/availability",
                    f"{base_topic}/{{name#}}/set",
                    f"{base_topic}/{{name#}}/get",
                    f"{base_topic}/{{name#}}/set/{{attribute}}",
                    f"{base_topic}/{{name#}}/get/{{attribute}}",
                ],
                "payload": "json_leaves",
                "device": device,
                "booleans": booleans,
                "exclude": ["update.*"],  # firmware update progress, not a reading
                "units": _Z2M_UNITS,
            },
            {
                "name": "zigbee2mqtt.availability",
                "topic": f"{base_topic}/{{device#}}/availability",
                "exclude_topics": [f"{base_topic}/bridge/#"],
                "payload": "status",
                "device": device,
                # {"state": "online"} since 1.x's availability rework; the bare word before
                "status_path": "state",
                "status_words": {"online": "online", "offline": "offline"},
            },
        ]
    )


# ESPHome (esphome.io/components/mqtt.html): <topic prefix>/<component>/<object id>/state,
# birth and will "online"/"offline" on <topic prefix>/status. The prefix is the node name.
def esphome(binary_sensors: bool = False) -> list[Mapping]:
    specs: list[dict[str, Any]] = [
        {
            "name": "esphome.sensor",
            "topic": "{device}/sensor/{name}/state",
            "payload": "bare_number",
            "metric_level": "name",
        },
        {
            "name": "esphome.status",
            "topic": "{device}/status",
            "payload": "status",
            "status_words": {"online": "online", "offline": "offline"},
        },
    ]
    if binary_sensors:
        specs.append(
            {
                "name": "esphome.binary_sensor",
                "topic": "{device}/binary_sensor/{name}/state",
                "payload": "bare_number",
                "metric_level": "name",
                "booleans": True,
            }
        )
    return _declared(specs)


# InfluxDB line protocol (docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/),
# as Telegraf's MQTT output and InfluxDB clients publish it.
def influx_line(
    topic: str = "telegraf/{device}/{plugin}",  # Telegraf MQTT output: telegraf/<host>/<plugin>
    device_tag: str | None = None,
    metric_style: str = "field",
    precision: str = "ns",
) -> list[Mapping]:
    return _declared(
        [
            {
                "name": "influx_line",
                "topic": topic,
                "payload": "line_protocol",
                "line_protocol": {
                    "device_tag": device_tag,
                    "metric_style": metric_style,
                    "precision": precision,
                },
            }
        ]
    )


register_profile("tasmota", tasmota)
register_profile("shelly_gen2", shelly_gen2)
register_profile("zigbee2mqtt", zigbee2mqtt)
register_profile("esphome", esphome)
register_profile("influx_line", influx_line)
# Sparkplug B is stateful (births, aliases) and lives in its own modules.
register_profile("sparkplug_b", lambda **options: sparkplug_profile(options))
