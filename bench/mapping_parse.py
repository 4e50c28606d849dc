"""Parsing one message: a mapped firmware format against the bridge's own, without I/O.

    python -m bench.mapping_parse [--messages 50000]

The same readings (a Tasmota power plug with a climate sensor: 13 numbers) as

- Tasmota JSON on ``tele/<device>/SENSOR`` through the built-in profile: route + extract;
- our own format (the flat JSON object of the same metric names) through
  ``ingest.payload.parse_entries``, the ingest's per-message parse;
- a Shelly Gen2 ``NotifyStatus`` and an InfluxDB line-protocol message of similar size.

Reports microseconds per message and readings per second of one core; indicative, on a
shared machine. Route and extract are what the ingest adds per mapped message; the storage
after them is the same for both.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from ingest.mapping.mapset import MappingSet
from ingest.mapping.profiles import build_profile
from ingest.payload import parse_entries

NOW = datetime.now(UTC).replace(microsecond=0)
LOCAL = NOW.strftime("%Y-%m-%dT%H:%M:%S")
TASMOTA = orjson.dumps(
    {
        "Time": LOCAL,
        "ENERGY": {
            "TotalStartTime": "2026-01-01T00:00:00",
            "Total": 1.956,
            "Yesterday": 0.054,
            "Today": 0.049,
            "Period": 0,
            "Power": 9,
            "ApparentPower": 21,
            "ReactivePower": 19,
            "Factor": 0.43,
            "Voltage": 231,
            "Current": 0.089,
        },
        "AM2301": {"Temperature": 21.4, "Humidity": 40.1, "DewPoint": 7.3},
        "TempUnit": "C",
    }
)
SHELLY = orjson.dumps(
    {
        "src": "shellyplus1pm-a8032ab12345",
        "dst": "shellyplus1pm-a8032ab12345/events",
        "method": "NotifyStatus",
        "params": {
            "ts": NOW.timestamp(),
            "switch:0": {
                "id": 0,
                "apower": 12.3,
                "voltage": 230.1,
                "current": 0.058,
                "freq": 50.0,
                "pf": 0.91,
                "aenergy": {"total": 12.5, "by_minute": [1.0, 2.0, 3.0], "minute_ts": 1},
                "temperature": {"tC": 42.1, "tF": 107.8},
            },
        },
    }
)
LINES = (
    "power,device=plug1 total=1.956,today=0.049,power=9,apparent=21,reactive=19,factor=0.43,"
    f"voltage=231,current=0.089 {int(NOW.timestamp()) * 10**9}\n"
    f"climate,device=plug1 temperature=21.4,humidity=40.1,dew_point=7.3 "
    f"{int(NOW.timestamp()) * 10**9}\n"
).encode()


def own_payload() -> bytes:
    """The same readings in the bridge's own flat form, with the same metric names."""
    mappings = MappingSet(build_profile("tasmota"))
    mapping = mappings.route("tele/plug1/SENSOR")
    assert mapping is not None
    [device] = mapping.extract("tele/plug1/SENSOR", TASMOTA, NOW).readings
    [(_, values)] = device.entries
    flat: dict[str, object] = {"ts": NOW.isoformat()}
    flat.update({name: {"value": v, "unit": u} if u else v for name, (v, u) in values.items()})
    return orjson.dumps(flat)


def timed(n: int, step: Callable[[], int]) -> tuple[float, int]:
    step()  # warm caches (metric names, units) as a running ingest has them
    start = time.perf_counter()
    count = 0
    for _ in range(n):
        count += step()
    return time.perf_counter() - start, count // n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    n = parser.parse_args().messages

    tasmota = MappingSet(build_profile("tasmota"))
    shelly = MappingSet(build_profile("shelly_gen2"))
    influx = MappingSet(build_profile("influx_line", device_tag="device", topic="telegraf/{host}"))
    own = own_payload()

    def mapped(mappings: MappingSet, topic: str, payload: bytes) -> Callable[[], int]:
        def step() -> int:
            mapping = mappings.route(topic)
            assert mapping is not None
            result = mapping.extract(topic, payload, NOW)
            return sum(len(v) for r in result.readings for _, v in r.entries)

        return step

    def ours() -> int:
        return sum(len(v) for _, v in parse_entries("plug1", own, NOW))

    cases = [
        ("own format, parse_entries", len(own), ours),
        (
            "tasmota SENSOR, route+extract",
            len(TASMOTA),
            mapped(tasmota, "tele/plug1/SENSOR", TASMOTA),
        ),
        (
            "shelly NotifyStatus, route+extract",
            len(SHELLY),
            mapped(shelly, "s1/events/rpc", SHELLY),
        ),
        ("influx line protocol, route+extract", len(LINES), mapped(influx, "telegraf/gw", LINES)),
    ]
    print(f"{n} messages each, one core")
    print(f"{'':38} {'bytes':>6} {'readings':>9} {'us/msg':>8} {'readings/s':>12}")
    for label, size, step in cases:
        seconds, per_message = timed(n, step)
        micros = seconds / n * 1e6
        rate = per_message * n / seconds
        print(f"{label:38} {size:6} {per_message:9} {micros:8.1f} {rate:12,.0f}")


if __name__ == "__main__":
    main()
