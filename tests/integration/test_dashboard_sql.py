"""The Grafana dashboard's SQL panels run against a real migrated database (Grafana itself is
not available here): every query runs once Grafana's time macro is expanded, and the
device, latest-value and hourly panels show what was stored."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "telemetry-bridge.json"


def _queries() -> dict[str, str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {p["title"]: t["rawSql"] for p in panels for t in p.get("targets", []) if "rawSql" in t}


def _expand(query: str, start: datetime, end: datetime) -> str:
    """Grafana's $__timeFilter(column), as its PostgreSQL data source expands it."""
    expanded = re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: f"{m[1]} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        query,
    )
    assert "$" not in expanded, f"a Grafana macro this test does not expand: {query}"
    return expanded


async def test_every_dashboard_query_runs_and_shows_stored_data(database_url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    hour = now.replace(minute=0, second=0)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO devices (device_id, status, last_seen) VALUES"
            " ('dash-1', 'online', $1), ('dash-2', 'offline', $1)",
            now,
        )
        await conn.execute(
            "INSERT INTO latest_values (device_id, metric, ts, value, unit, received_at)"
            " VALUES ('dash-1', 'temperature', $1, 21.5, 'C', $1)",
            now,
        )
        await conn.execute("SELECT ensure_range_partitions('readings_1h', 'month', $1, $1)", hour)
        await conn.execute(
            "INSERT INTO readings_1h (device_id, metric, bucket, count, sum, min, max,"
            " first_ts, first, last_ts, last) VALUES"
            " ('dash-1', 'temperature', $1, 60, 1290, 21, 22, $1, 21, $1, 21.5),"
            " ('dash-2', 'temperature', $1, 30, 600, 20, 20, $1, 20, $1, 20)",
            hour,
        )
        results = {
            title: await conn.fetch(_expand(query, now - timedelta(hours=6), now))
            for title, query in _queries().items()
        }
    finally:
        await conn.close()

    assert dict(results["Devices online"][0]) == {"online": 1, "devices": 2}
    assert {r["status"]: r["devices"] for r in results["Devices by status"]} == {
        "offline": 1,
        "online": 1,
    }
    [latest] = results["Latest values"]  # dash-2 has no values yet: left out
    assert (latest["device_id"], latest["metric"], latest["value"]) == (
        "dash-1",
        "temperature",
        21.5,
    )
    assert [tuple(r) for r in results["Readings per hour (1h rollup)"]] == [(hour, 90)]
    assert results["Open alerts"] == []
    assert results["Dead letters by reason"] == []
