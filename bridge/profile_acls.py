"""The broker topics of each built-in mapping profile (ingest/mapped.py), for access control.

``ingest_reads``: what the ingest subscribes to for the profile; the production acl file
(deploy/mosquitto/acl-ingest) has a ``pattern read`` line for each (a unit test checks).
``device_sends`` / ``device_receives``: what `telemetry-bridge add-device ID --profile P` lets
the device publish and subscribe to, ``{device}`` being its id (validated: no wildcard, no
``/``). The topics are each firmware's defaults; a device configured with other topics needs
a mapping and ACLs of its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProfileTopics:
    ingest_reads: tuple[str, ...]
    device_sends: tuple[str, ...]
    device_receives: tuple[str, ...] = ()
    note: str = ""


PROFILE_TOPICS: dict[str, ProfileTopics] = {
    # Tasmota: tele/<topic>/SENSOR|STATE|LWT, stat/<topic>/..., commands on cmnd/<topic>/...
    "tasmota": ProfileTopics(
        ingest_reads=("tele/#", "stat/#"),
        device_sends=("tele/{device}/+", "stat/{device}/+"),
        device_receives=("cmnd/{device}/+",),
        note="the device's Tasmota Topic is its device id",
    ),
    # Shelly Gen2: <id>/events/rpc (NotifyStatus), <id>/online, <id>/status/<component>;
    # RPC requests on <id>/rpc
    "shelly_gen2": ProfileTopics(
        ingest_reads=("+/events/rpc", "+/online", "+/status/+"),
        device_sends=("{device}/events/rpc", "{device}/online", "{device}/status/+"),
        device_receives=("{device}/rpc",),
        note="the device's MQTT prefix (topic_prefix) is its device id",
    ),
    # zigbee2mqtt: one gateway publishes zigbee2mqtt/<friendly name> for all its devices
    "zigbee2mqtt": ProfileTopics(
        ingest_reads=("zigbee2mqtt/#",),
        device_sends=("zigbee2mqtt/#",),
        device_receives=("zigbee2mqtt/+/set", "zigbee2mqtt/bridge/request/#"),
        note="the broker user is the zigbee2mqtt gateway, not one Zigbee device",
    ),
    # ESPHome: <node>/sensor/<name>/state (a bare number), <node>/status (online/offline)
    "esphome": ProfileTopics(
        ingest_reads=("+/sensor/+/state", "+/binary_sensor/+/state", "+/status"),
        device_sends=(
            "{device}/sensor/+/state",
            "{device}/binary_sensor/+/state",
            "{device}/status",
            "{device}/debug",
        ),
        device_receives=("{device}/+/+/command",),
        note="the node's topic_prefix is its device id",
    ),
    # Sparkplug B: spBv1.0/<group>/N*/<edge node>[/<device>]; commands N/DCMD; host STATE
    "sparkplug_b": ProfileTopics(
        ingest_reads=("spBv1.0/#",),
        device_sends=(
            "spBv1.0/+/NBIRTH/{device}",
            "spBv1.0/+/NDATA/{device}",
            "spBv1.0/+/NDEATH/{device}",
            "spBv1.0/+/DBIRTH/{device}/+",
            "spBv1.0/+/DDATA/{device}/+",
            "spBv1.0/+/DDEATH/{device}/+",
        ),
        device_receives=("spBv1.0/+/NCMD/{device}", "spBv1.0/+/DCMD/{device}/+", "spBv1.0/STATE/+"),
        note="the broker user is the edge node (its edge node id is the device id)",
    ),
    # InfluxDB line protocol as Telegraf's MQTT output publishes it: telegraf/<host>/<plugin>
    "influx_line": ProfileTopics(
        ingest_reads=("telegraf/#",),
        device_sends=("telegraf/{device}/#",),
        note="the Telegraf host name is the device id",
    ),
}


# First topic levels that belong to the bridge or to another profile: a device whose id is one
# of them gets no profile whose topics start with the device id (an ESPHome node called
# "devices" could otherwise publish devices/sensor/commands/state, a command to "sensor").
RESERVED_FIRST_LEVELS = frozenset(
    {"devices", "telemetry", "status", "alerts", "system", "logs", "bridge"}
    | {t.split("/", 1)[0] for p in PROFILE_TOPICS.values() for t in p.device_sends} - {"{device}"}
)


def _prefixed(topic: str, prefix: str) -> str:
    return f"{prefix}/{topic}" if prefix else topic


def profile_acls(profile: str, device_id: str, topic_prefix: str = "") -> list[dict[str, object]]:
    """Dynamic-security ACLs of ``profile``'s topics for the device ``device_id`` (validated by
    the caller). ValueError naming the known profiles for an unknown one."""
    found = PROFILE_TOPICS.get(profile)
    if found is None:
        raise ValueError(
            f"no built-in profile {profile!r} (one of {', '.join(sorted(PROFILE_TOPICS))})"
        )
    leading = any(t.startswith("{device}") for t in found.device_sends + found.device_receives)
    if leading and device_id in RESERVED_FIRST_LEVELS:
        raise ValueError(
            f"device id {device_id!r} is a topic level of the bridge or of another profile: "
            f"with profile {profile} its topics would start with it; choose another id"
        )
    acls: list[dict[str, object]] = []
    for topic in found.device_sends:
        t = _prefixed(topic.format(device=device_id), topic_prefix)
        acls.append({"acltype": "publishClientSend", "topic": t, "allow": True})
    for topic in found.device_receives:
        t = _prefixed(topic.format(device=device_id), topic_prefix)
        for acltype in ("subscribePattern", "publishClientReceive"):
            acls.append({"acltype": acltype, "topic": t, "allow": True})
    return acls
