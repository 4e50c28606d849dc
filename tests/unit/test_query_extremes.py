"""Extreme and oversized values for the one query layer (storage.query_spec): always a
QueryError naming the parameter, never OverflowError or a ValueError from int()."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingest.payload import PayloadError, parse_telemetry
from storage.query_spec import (
    EARLIEST_TIME,
    LATEST_TIME,
    QueryError,
    parse_query,
    parse_time,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("params", "named", "words"),
    [
        ({"to": "0001-01-01"}, "to", "out of range"),
        ({"from": "0001-01-01T00:00:00+14:00"}, "from", ""),  # past year 1 in UTC
        ({"to": "9999-12-31T23:59:59Z"}, "to", "out of range"),
        ({"to": "9999-12-31T23:59:59-14:00"}, "to", ""),
        ({"from": "1969-12-31T23:59:59Z"}, "from", "out of range"),
        ({"to": "2200-01-01T00:00:01Z"}, "to", "out of range"),
        ({"from": "-999999w"}, "from", "out of range"),
        ({"from": "now-999999w"}, "from", "out of range"),
        ({"to": "now+999999w"}, "to", "out of range"),
        ({"to": "+999999d"}, "to", "out of range"),
        ({"to": "99999999999999"}, "to", "out of range"),  # 14 digits of epoch ms
        ({"to": "9" * 30}, "to", "out of range"),
        ({"from": "1" * 5000}, "from", "out of range"),  # past int()'s 4,300-digit limit
        ({"from": "-" + "1" * 5000}, "from", "out of range"),
        ({"from": "-1000"}, "from", "out of range"),  # before 1970
        ({"to": 10**17}, "to", "out of range"),
        ({"to": -(10**17)}, "to", "out of range"),
        ({"to": 10**400}, "to", "out of range"),
        ({"to": 1e300}, "to", "epoch milliseconds"),
        ({"to": float("inf")}, "to", "epoch milliseconds"),
        ({"to": "²"}, "to", "epoch milliseconds"),  # a digit to str.isdigit(), not to int()
        ({"to": "--5"}, "to", "epoch milliseconds"),
        ({"to": "x" * 100_000}, "to", "epoch milliseconds"),
        ({"limit": "9" * 5000}, "limit", "whole number"),
        ({"limit": "²"}, "limit", "whole number"),
        ({"limit": 10**400}, "limit", "whole number"),
        ({"bucket": "999999w"}, "bucket", "whole seconds"),
        ({"bucket": "1d", "from": "2199-12-01", "to": "2200-01-01"}, "", ""),  # fine
        ({"cursor": "x" * 100_000}, "cursor", "not a cursor"),
        ({"device_id": "d" * 100_000}, "device_id", "not a valid name"),
        ({"device_id": ",".join(["d"] * 5000)}, "device_id", "at most"),
    ],
)
def test_extremes_name_the_parameter(params: dict[str, Any], named: str, words: str) -> None:
    query = {"device_id": "d1", **params}
    if not named:
        parse_query(query, NOW)
        return
    with pytest.raises(QueryError) as err:
        parse_query(query, NOW)
    assert str(err.value).startswith(f"{named}:") and words in str(err.value)
    assert len(str(err.value)) < 200  # never the whole oversized value echoed back


def test_the_window_edges_are_accepted() -> None:
    assert parse_time(EARLIEST_TIME.isoformat(), "from", NOW) == EARLIEST_TIME
    assert parse_time(LATEST_TIME.isoformat(), "to", NOW) == LATEST_TIME
    assert parse_time("0", "from", NOW) == EARLIEST_TIME
    assert parse_time("-1w", "from", NOW) == NOW - timedelta(weeks=1)


def test_a_bucketed_range_at_the_edge_does_not_overflow() -> None:
    q = parse_query({"device_id": "d1", "from": "1970-01-01T00:30:00Z", "bucket": "1d",
                     "to": "1970-01-02T12:00:00Z"}, NOW)  # fmt: skip
    assert q.start == EARLIEST_TIME and q.end == EARLIEST_TIME + timedelta(days=2)


@pytest.mark.parametrize("ts", ['"0001-01-01T00:00:00+14:00"', '"9999-12-31T23:59:59-14:00"'])
def test_a_device_timestamp_at_datetimes_edge_is_a_payload_error(ts: str) -> None:
    """The same parser stamps readings: an OverflowError there escaped the ingest's
    PayloadError handling."""
    with pytest.raises(PayloadError):
        parse_telemetry("d1", f'{{"ts": {ts}, "values": {{"t": 1}}}}'.encode(), NOW)
