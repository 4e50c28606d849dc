"""The query layer, rollups and retention against a real PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from storage.query_spec import AGGREGATIONS, TelemetryQuery, parse_query
from storage.readings import ReadingRow, ReadingWriter
from storage.retention import apply_retention
from storage.rollups import refresh_rollups
from storage.telemetry import Page, run_query, source_for, stream_rows

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)  # crosses midnight: two daily partitions
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


def readings(device: str, metric: str, start: datetime, n: int, step_s: float) -> list[ReadingRow]:
    rnd = random.Random(f"{device}/{metric}")
    return [
        (
            device,
            metric,
            start + timedelta(seconds=i * step_s),
            round(rnd.uniform(-50, 150), 3),
            None,
            datetime.now(UTC),
        )
        for i in range(n)
    ]


async def store(database_url: str, rows: list[ReadingRow]) -> None:
    writer = ReadingWriter(database_url)
    try:
        for i in range(0, len(rows), 500):
            await writer.write(rows[i : i + 500])
    finally:
        await writer.close()


def flat(page: Page) -> list[tuple[str, str, datetime, float | None]]:
    return [(s.device_id, s.metric, ts, v) for s in page.series for ts, v in s.points]


def q(now: datetime = T0, /, **params: object) -> TelemetryQuery:
    return parse_query({"limit": 10_000, **params}, now)


async def test_rollups_give_the_raw_answer_for_every_aggregation(
    db: asyncpg.Connection, database_url: str
) -> None:
    # Irregular steps and a three-hour span over midnight; then refresh, then more readings
    # that stay pending so the rollup path must stitch rollups and raw rows together.
    rows = readings("d1", "temp", T0, 2000, 7.3) + readings("d2", "temp", T0, 900, 13.1)
    rows += readings("d1", "hum", T0 + timedelta(minutes=5), 700, 11.0)
    await store(database_url, rows)
    result = await refresh_rollups(db, LONG_AGO)
    assert result.batches >= 1 and result.minutes > 0 and result.hours > 0
    assert await db.fetchval("SELECT count(*) FROM rollup_pending") == 0
    late = readings("d1", "temp", T0 + timedelta(seconds=3.1), 50, 61.0)  # fills earlier gaps
    await store(database_url, late)
    assert await db.fetchval("SELECT count(*) FROM rollup_pending") > 0

    span = {"from": T0.isoformat(), "to": (T0 + timedelta(hours=5)).isoformat()}
    for bucket, expected_source in (("1m", "1m"), ("5m", "1m"), ("1h", "1h"), ("2h", "1h")):
        for agg in AGGREGATIONS:
            params = {"device_id": "d1,d2", "bucket": bucket, "agg": agg, **span}
            auto = q(**params)
            assert source_for(auto) == expected_source
            got = flat(await run_query(db, auto))
            want = flat(await run_query(db, q(**params, source="raw")))
            assert [r[:3] for r in got] == [r[:3] for r in want], (bucket, agg)
            for g, w in zip(got, want, strict=True):
                assert g[3] == pytest.approx(w[3], rel=1e-9), (bucket, agg, g, w)
    # the rollups really are used once everything is folded in
    await refresh_rollups(db, LONG_AGO)
    assert await db.fetchval("SELECT count(*) FROM rollup_pending") == 0
    minutes = await db.fetchval("SELECT sum(count) FROM readings_1m")
    hours = await db.fetchval("SELECT sum(count) FROM readings_1h")
    stored = await db.fetchval("SELECT count(*) FROM readings")
    assert minutes == hours == stored == len(rows) + len(late)


async def test_raw_paging_and_csv_stream(db: asyncpg.Connection, database_url: str) -> None:
    rows = readings("d1", "temp", T0, 250, 1.0) + readings("d1", "hum", T0, 250, 1.0)
    await store(database_url, rows)
    span = {"from": T0.isoformat(), "to": (T0 + timedelta(hours=1)).isoformat()}
    seen: list[tuple[str, str, datetime, float | None]] = []
    cursor = None
    pages = 0
    while True:
        page = await run_query(
            db, q(device_id="d1", limit=120, **span, **({"cursor": cursor} if cursor else {}))
        )
        pages += 1
        seen += flat(page)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor.encode()
    assert pages == 5 and len(seen) == 500 and len(set(seen)) == 500
    assert seen == sorted(seen)
    export = parse_query({"device_id": "d1", **span, "format": "csv"}, T0)
    assert export.limit is None
    streamed = [r async for chunk in stream_rows(db, export, prefetch=64) for r in chunk]
    assert streamed == seen


async def test_gap_filling(db: asyncpg.Connection, database_url: str) -> None:
    at = [T0 + timedelta(minutes=m) for m in (0, 1, 4)]
    await store(
        database_url,
        [("d1", "temp", t, float(i + 1), None, datetime.now(UTC)) for i, t in enumerate(at)],
    )
    span = {"from": T0.isoformat(), "to": (T0 + timedelta(minutes=6)).isoformat()}

    async def values(fill: str) -> list[float | None]:
        page = await run_query(db, q(device_id="d1", metric="temp", bucket="1m", fill=fill, **span))
        return [v for _, _, _, v in flat(page)]

    assert await values("none") == [1.0, 2.0, 3.0]
    assert await values("null") == [1.0, 2.0, None, None, 3.0, None]
    assert await values("zero") == [1.0, 2.0, 0.0, 0.0, 3.0, 0.0]
    assert await values("previous") == [1.0, 2.0, 2.0, 2.0, 3.0, 3.0]
    # a requested metric without data still gets its (empty) grid
    page = await run_query(
        db, q(device_id="d1", metric="temp,hum", bucket="1m", fill="null", **span)
    )
    assert [(s.metric, len(s.points)) for s in page.series] == [("hum", 6), ("temp", 6)]


async def test_retention_drops_only_expired_partitions(
    db: asyncpg.Connection, database_url: str
) -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    days = [now - timedelta(days=d) for d in (0, 1, 2, 3, 10)]
    await store(database_url, [r for d in days for r in readings("d1", "temp", d, 5, 60)])
    await refresh_rollups(db, LONG_AGO)
    dropped = await apply_retention(
        db, {"raw": timedelta(days=2), "1m": timedelta(days=5), "1h": None}, now=now
    )
    # raw keeps partitions ending after now-2d (20 Nov 12:00): 20, 21, 22 Nov
    assert sorted(dropped) == [
        "readings_1m_20261112",
        "readings_20261112",
        "readings_20261119",
    ]
    left = await db.fetch("SELECT DISTINCT ts::date AS d FROM readings ORDER BY 1")
    assert [str(r["d"]) for r in left] == ["2026-11-20", "2026-11-21", "2026-11-22"]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM readings_1m WHERE bucket < $1", now - timedelta(days=5)
        )
        == 0
    )
    assert await db.fetchval("SELECT sum(count) FROM readings_1h") == 25  # 1h kept forever
    # the hourly answer still covers the days whose raw rows are gone
    page = await run_query(
        db, q(now, device_id="d1", bucket="1d", agg="count", **{"from": "-12d", "to": "now"})
    )
    assert sum(v or 0 for _, _, _, v in flat(page)) == 25
