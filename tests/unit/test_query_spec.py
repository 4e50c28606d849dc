"""The pure query parameter rules and retention arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from storage.query_spec import Cursor, QueryError, parse_duration, parse_query, parse_time
from storage.retention import expired, partition_end

NOW = datetime(2026, 11, 22, 12, 34, 56, 789000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("-1h", NOW - timedelta(hours=1)),
        ("now-30m", NOW - timedelta(minutes=30)),
        ("now + 2d", NOW + timedelta(days=2)),
        ("+500ms", NOW + timedelta(milliseconds=500)),
        ("-1w", NOW - timedelta(weeks=1)),
        ("2026-11-01T00:00:00Z", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T02:00:00+02:00", datetime(2026, 11, 1, tzinfo=UTC)),
        ("1700000000000", datetime.fromtimestamp(1_700_000_000, UTC)),
        (1700000000000, datetime.fromtimestamp(1_700_000_000, UTC)),
    ],
)
def test_times(text: object, expected: datetime) -> None:
    assert parse_time(text, "from", NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-1y", "now-", "--1h", "", True, None, 1.5, "1h"])
def test_bad_times(text: object) -> None:
    with pytest.raises(QueryError, match="from:"):
        parse_time(text, "from", NOW)


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1d") == timedelta(days=1)
    for bad in ("1.5h", "h", "10 years", "-1m"):
        with pytest.raises(QueryError):
            parse_duration(bad)


def test_defaults_and_lists() -> None:
    q = parse_query({"device_id": "a,b, c", "metric": ["t"]}, NOW)
    assert q.devices == ("a", "b", "c") and q.metrics == ("t",)
    assert q.end == NOW and q.start == NOW - timedelta(hours=1)
    assert q.bucket is None and q.limit == 1000 and q.fill == "none" and q.format == "json"
    assert parse_query({"device_id": "a", "format": "csv"}, NOW).limit is None
    assert parse_query({"device_id": ["a", "a"]}, NOW).devices == ("a",)


def test_bucketed_ranges_cover_whole_buckets() -> None:
    q = parse_query({"device_id": "a", "from": "-1h", "bucket": "15m"}, NOW)
    assert q.start == datetime(2026, 11, 22, 11, 30, tzinfo=UTC)
    assert q.end == datetime(2026, 11, 22, 12, 45, tzinfo=UTC)
    assert q.bucket_s == 900 and q.agg == "avg"


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({}, "device_id: required"),
        ({"device_id": "a/b"}, "device_id"),
        ({"device_id": "+"}, "device_id"),
        ({"device_id": ",".join(f"d{i}" for i in range(101))}, "at most 100"),
        ({"device_id": "a", "metric": "t#"}, "metric"),
        ({"device_id": "a", "agg": "median", "bucket": "1m"}, "agg: one of"),
        ({"device_id": "a", "agg": "max"}, "agg needs a bucket"),
        ({"device_id": "a", "fill": "null"}, "fill needs a bucket"),
        ({"device_id": "a", "from": "now", "to": "-1h"}, "from must be before to"),
        ({"device_id": "a", "from": "-1d", "bucket": "1s"}, "bucket too small"),
        ({"device_id": "a", "bucket": "500ms"}, "whole seconds"),
        ({"device_id": "a", "bucket": "2d"}, "from 1s to 1d"),
        ({"device_id": "a", "limit": 0}, "limit"),
        ({"device_id": "a", "limit": 10_001}, "limit"),
        ({"device_id": "a", "limit": True}, "limit"),
        ({"device_id": "a", "cursor": "!!"}, "cursor"),
        ({"device_id": "a", "cursor": 5}, "cursor"),
        ({"device_id": "a", "source": "rollup", "bucket": "30s"}, "whole minutes"),
        ({"device_id": "a", "format": "xlsx"}, "format"),
        ({"device_id": "a", "select": "*"}, "unknown parameter"),
    ],
)
def test_bad_parameters(params: dict[str, object], words: str) -> None:
    with pytest.raises(QueryError, match=words):
        parse_query(params, NOW)


def test_too_small_bucket_names_the_smallest_that_fits() -> None:
    with pytest.raises(QueryError, match="at least 9s"):
        parse_query({"device_id": "a", "from": "-1d", "bucket": "5s"}, NOW)
    parse_query({"device_id": "a", "from": "-1d", "bucket": "9s"}, NOW)


def test_cursor_round_trip_and_tampering() -> None:
    cursor = Cursor("d1", "temperature", NOW)
    assert Cursor.decode(cursor.encode()) == cursor
    forged = Cursor("d1'; DROP TABLE readings; --", "t", NOW).encode()
    with pytest.raises(QueryError):
        Cursor.decode(forged)


def test_partition_ranges_and_expiry() -> None:
    assert partition_end("readings", "day", "readings_20261121") == datetime(
        2026, 11, 22, tzinfo=UTC
    )
    assert partition_end("readings_1h", "month", "readings_1h_202612") == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert partition_end("readings", "day", "readings_1m_20261121") is None
    assert partition_end("readings", "day", "readings_default") is None
    names = ["readings_20261119", "readings_20261120", "readings_20261121", "readings_old"]
    horizon = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    assert expired("readings", "day", names, horizon) == ["readings_20261119", "readings_20261120"]
