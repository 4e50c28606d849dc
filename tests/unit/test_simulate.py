"""The simulated fleet: one device never sends two readings with one timestamp."""

import random
from datetime import UTC, datetime, timedelta

import orjson

from bridge.simulate import Fleet


def test_a_burst_in_one_millisecond_gets_distinct_increasing_timestamps() -> None:
    fleet = Fleet(["a", "b"], 2, random.Random(1))
    now = datetime(2026, 1, 1, 12, 0, 0, 500, tzinfo=UTC)
    stamps = [orjson.loads(fleet.message("a", now))["ts"] for _ in range(5)]
    assert stamps == [f"2026-01-01T12:00:00.00{i}Z" for i in range(5)]
    # another device keeps its own sequence; real time moving on is used as it is
    assert orjson.loads(fleet.message("b", now))["ts"] == "2026-01-01T12:00:00.000Z"
    later = now + timedelta(seconds=1)
    assert orjson.loads(fleet.message("a", later))["ts"] == "2026-01-01T12:00:01.000Z"
