"""The ingest's preparation of mapped messages (pure: no broker, no database): what a mapping
returns is checked like our own format, a bad message is refused whole with the mapping's name,
and a reload does not strand the messages received before it."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping as ReadOnly
from datetime import UTC, datetime, timedelta

import pytest

from ingest.mapped import NoMappings
from ingest.mapping.api import DeviceReadings, DeviceStatus, Extracted
from ingest.mapping_loop import valid_filter
from ingest.mqtt import MqttEndpoint
from ingest.prepared import Inbound, IngestConfig, IngestStats
from ingest.preparing import Preparer
from ingest.topics import Topics
from tests.mapped_kit import Router, TeleSensor


class Canned:
    """A mapping that returns what the test gives it (a buggy mapping's output, too)."""

    name = "canned"
    filter = "canned/+"

    def __init__(self, out: Extracted) -> None:
        self.out = out

    def match(self, topic: str) -> ReadOnly[str, str] | None:
        return {} if topic.startswith("canned/") else None

    def extract(self, topic: str, payload: bytes, received: datetime) -> Extracted:
        return self.out


def preparer(prefix: str = "") -> Preparer:
    config = IngestConfig(
        MqttEndpoint.from_url("mqtt://127.0.0.1:1"), "postgresql://x/y", topics=Topics(prefix)
    )
    return Preparer(config, IngestStats())


def inbound(topic: str, payload: bytes = b"{}") -> Inbound:
    return Inbound(1, 1, topic, payload, time.time(), 0)


def run(p: Preparer, out: Extracted) -> tuple[list[tuple[str, ...]], list[str]]:
    p.use_mappings(Router([Canned(out)]))
    prep = p.prepare([inbound("canned/x")])
    return [tuple(map(str, r[:2])) for r in prep.rows], [d[3] + ": " + d[4] for d in prep.dead]


NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("readings", "reason"),
    [
        ([DeviceReadings("a b", [(NOW, {"t": (1.0, None)})])], "invalid_device_id"),
        ([DeviceReadings("d1", [(NOW, {"bad metric": (1.0, None)})])], "validation_error"),
        ([DeviceReadings("d1", [(NOW, {"t": (math.nan, None)})])], "validation_error"),
        ([DeviceReadings("d1", [(NOW, {"t": (1.0, "x" * 33)})])], "validation_error"),
        ([DeviceReadings("d1", [(NOW, {"t": (1.0, "\x00")})])], "validation_error"),
        (
            [DeviceReadings("d1", [(NOW + timedelta(days=1), {"t": (1.0, None)})])],
            "timestamp_out_of_range",
        ),
        (
            [DeviceReadings("d1", [(NOW, {f"m{i}": (1.0, None) for i in range(10_001)})])],
            "too_many_readings",
        ),
    ],
)
def test_what_a_mapping_returns_is_checked_like_our_own_format(
    readings: list[DeviceReadings], reason: str
) -> None:
    good = DeviceReadings("ok-1", [(NOW, {"t": (1.0, None)})])
    rows, dead = run(preparer(), Extracted(readings=[good, *readings]))
    assert rows == []  # refused whole: the good device's reading is not stored either
    assert len(dead) == 1 and dead[0].startswith(f"{reason}: mapping canned: ")


def test_several_devices_of_one_message_get_rows_statuses_and_notes() -> None:
    p = preparer()
    out = Extracted(
        readings=[
            DeviceReadings("n1", [(NOW, {"a": (1.0, "V"), "b": (2, None)})]),
            DeviceReadings("n1.d1", [(NOW, {"c": (3.0, None)})]),
        ],
        statuses=[DeviceStatus("n1", "online", "NBIRTH")],
        notes=["sequence gap"],
    )
    p.use_mappings(Router([Canned(out)]))
    prep = p.prepare([inbound("canned/x")])
    assert [(r[0], r[1], r[4]) for r in prep.rows] == [
        ("n1", "a", "V"),
        ("n1", "b", None),
        ("n1.d1", "c", None),
    ]
    received = [r[5] for r in prep.rows]
    assert received == sorted(set(received))  # each reading its own, increasing
    assert [s[:3] for s in prep.statuses] == [("n1", "online", "NBIRTH")]
    assert p.stats.mapped_readings == {"canned": 3} and p.stats.mapping_notes == 1
    bad = Extracted(statuses=[DeviceStatus("n1", "sleeping")])
    assert run(p, bad)[1][0].startswith("validation_error: mapping canned: unknown status")


def test_a_reload_keeps_routing_what_arrived_before_it_and_the_prefix_is_stripped() -> None:
    p = preparer("site1")
    p.use_mappings(Router([TeleSensor()]))
    p.use_mappings(NoMappings())  # reloaded: tele_sensor removed
    prep = p.prepare(
        [
            inbound("site1/tele/k1/SENSOR", b'{"P": 1}'),
            inbound("site1/other/k1", b"1"),
            inbound("tele/k1/SENSOR", b"1"),
        ]
    )
    assert [(r[0], r[1]) for r in prep.rows] == [("k1", "P")]
    assert [d[3] for d in prep.dead] == ["no_mapping", "no_mapping"]
    p.use_mappings(NoMappings())  # a second reload: now it is gone
    prep = p.prepare([inbound("site1/tele/k1/SENSOR", b'{"P": 1}')])
    assert [d[3] for d in prep.dead] == ["no_mapping"]


def test_our_own_topics_never_reach_a_mapping() -> None:
    p = preparer()
    p.use_mappings(Router([Canned(Extracted())]))
    prep = p.prepare([inbound("devices/d1/telemetry", b'{"t": 1}')] * 2)
    assert [(r[0], r[1]) for r in prep.rows] == [("d1", "t"), ("d1", "t")]


def test_a_mapping_filter_must_be_a_plain_subscription() -> None:
    for good in ("tele/+/SENSOR", "spBv1.0/#", "+/sensor/+/state", "a"):
        assert valid_filter(good), good
    for bad in ("", "$share/x/t", "$SYS/#", "a/#/b", "a/b+/c", "a\x00", "/".join("a" * 40)):
        assert not valid_filter(bad), bad
