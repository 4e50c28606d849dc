"""The ingest's writers side by side (two batches in flight, ingest/pipeline.py) on a real
database: a new day's partition is created once for both, and two batches touching the same
devices commit concurrently with the latest value and the device rows right."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from storage.readings import KnownDays, ReadingRow, ReadingWriter

DAY = datetime(2031, 3, 4, tzinfo=UTC)  # no partition exists for it yet


def batch(first: int, n: int, devices: int) -> list[ReadingRow]:
    return [
        (
            f"dev-{i % devices}",
            "t",
            DAY + timedelta(milliseconds=i),
            float(i),
            None,
            datetime.now(UTC) + timedelta(microseconds=i),
        )
        for i in range(first, first + n)
    ]


async def test_two_writers_create_a_new_days_partition_once_and_both_commit(
    database_url: str,
) -> None:
    known = KnownDays()
    writers = [ReadingWriter(database_url, known_days=known) for _ in range(2)]
    try:
        # the same 50 devices in both batches: their latest_values and devices rows are
        # updated by two transactions at once
        results = await asyncio.wait_for(
            asyncio.gather(
                writers[0].write(batch(0, 2000, 50)), writers[1].write(batch(2000, 2000, 50))
            ),
            60,
        )
    finally:
        for w in writers:
            await w.close()
    assert [r.inserted for r in results] == [2000, 2000]
    assert known.days == {DAY.date()}
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM readings") == 4000
        assert await conn.fetchval("SELECT to_regclass('readings_20310304') IS NOT NULL")
        # the latest value of each device is its last reading, whichever batch committed last
        latest = await conn.fetch("SELECT device_id, value FROM latest_values ORDER BY device_id")
        assert {r["device_id"]: r["value"] for r in latest} == {
            f"dev-{d}": float(3950 + d) for d in range(50)
        }
        assert await conn.fetchval("SELECT count(*) FROM devices") == 50
        # every device came online once: one status change, whichever batch saw it first
        changes = await conn.fetchval("SELECT count(*) FROM device_status_events")
        assert changes == 50
    finally:
        await conn.close()
