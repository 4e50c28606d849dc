"""The database's own limits for the ingest's writes, from memory (used by bench/ingest.py).

Every row is built before the clock starts, so only the database work (and asyncpg's encoding
of the rows) is timed, never the Python that makes them:

- limit-bare: COPY into a temp staging table + ``INSERT ... ON CONFLICT DO NOTHING`` into a
  table with nothing but the primary key (device_id, metric, ts): the idempotent write path at
  its cheapest.
- limit-own: the ingest's own write (storage.readings.ReadingWriter.write, the very call the
  ingest makes: readings, latest values, devices, rollup bookkeeping, one transaction per
  batch) into the project's schema, on one connection and on two concurrently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.services import fresh_database
from storage.readings import READING_COLUMNS, ReadingRow, ReadingWriter

_BARE = """
CREATE TABLE bare (
    device_id text NOT NULL, metric text NOT NULL, ts timestamptz NOT NULL,
    value double precision, unit text, received_at timestamptz,
    PRIMARY KEY (device_id, metric, ts)
)
"""
_STAGING = """
CREATE TEMP TABLE staging (device_id text, metric text, ts timestamptz,
    value double precision, unit text, received_at timestamptz) ON COMMIT DELETE ROWS
"""
_METRICS = (
    ("temperature", "°C"),
    ("humidity", "%"),
    ("pressure", "hPa"),
    ("voltage", "V"),
    ("current", "A"),
    ("power", "W"),
    ("co2", "ppm"),
    ("vibration", "mm/s"),
)


def batches(
    devices: int, metrics: int, readings: int, batch_readings: int
) -> list[list[ReadingRow]]:
    """The drain's shape (``devices`` x ``metrics``, one timestamp per message, a distinct
    received_at per reading), cut into batches of the ingest's size, all built up front."""
    ids = [f"bench-{i:04d}" for i in range(devices)]
    start = datetime.now(UTC) - timedelta(minutes=30)
    out: list[list[ReadingRow]] = []
    rows: list[ReadingRow] = []
    n = 0
    message = 0
    while n < readings:
        device = ids[message % devices]
        ts = start + timedelta(milliseconds=message)
        for name, unit in _METRICS[:metrics]:
            received = ts + timedelta(microseconds=n)
            rows.append((device, name, ts, 20.0 + (n % 97) / 10, unit, received))
            n += 1
        message += 1
        if len(rows) >= batch_readings or n >= readings:
            out.append(rows)
            rows = []
    return out


def _shares(items: list[list[ReadingRow]]) -> Iterator[list[ReadingRow]]:
    yield from items


async def limit_bare(admin_url: str, prepared: list[list[ReadingRow]]) -> dict[str, Any]:
    async with fresh_database(admin_url, migrate=False) as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(_BARE)
            await conn.execute(_STAGING)
            t0 = time.perf_counter()
            for rows in prepared:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "staging", records=rows, columns=READING_COLUMNS
                    )
                    await conn.execute(
                        "INSERT INTO bare SELECT * FROM staging ON CONFLICT DO NOTHING"
                    )
            seconds = time.perf_counter() - t0
            stored = int(await conn.fetchval("SELECT count(*) FROM bare"))
        finally:
            await conn.close()
    return _rate(stored, seconds)


async def limit_own(
    admin_url: str, prepared: list[list[ReadingRow]], connections: int
) -> dict[str, Any]:
    """``connections`` ReadingWriters taking batches from one queue, as the ingest does."""
    async with fresh_database(admin_url) as url:
        writers = [ReadingWriter(url) for _ in range(connections)]
        try:
            for w in writers:  # connect and create the partitions outside the clock
                await w.write(prepared[0][:1])
            conn = await asyncpg.connect(url)
            await conn.execute("TRUNCATE readings, latest_values, rollup_pending")
            await conn.close()
            work = _shares(prepared)

            async def drain(writer: ReadingWriter) -> None:
                for rows in work:
                    await writer.write(rows)

            t0 = time.perf_counter()
            await asyncio.gather(*(drain(w) for w in writers))
            seconds = time.perf_counter() - t0
        finally:
            for w in writers:
                await w.close()
        conn = await asyncpg.connect(url)
        stored = int(await conn.fetchval("SELECT count(*) FROM readings"))
        await conn.close()
    return {"connections": connections, **_rate(stored, seconds)}


def _rate(stored: int, seconds: float) -> dict[str, Any]:
    return {
        "readings": stored,
        "seconds": round(seconds, 2),
        "readings_per_s": round(stored / seconds),
    }
