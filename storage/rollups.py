"""Incremental per-minute and per-hour rollups of the readings.

Each ingest batch that stored new readings leaves a row in ``rollup_pending`` in its own
transaction. :func:`refresh_rollups` takes those rows, finds the (device, metric, minute)
buckets their readings fall in (a BRIN index on ``received_at``), recomputes exactly those
minutes from raw rows, then the hours that contain them from the minutes, and deletes the
pending rows, all in one transaction. Recomputing a bucket instead of adding to it makes the
job idempotent: a redelivered batch, a retried run or two schedulers racing cannot count a
reading twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

_CLAIM = """
SELECT id, min_ts, max_ts, received_lo, received_hi FROM rollup_pending
ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""

_DIRTY_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS rollup_dirty (
    device_id text, metric text, bucket timestamptz
) ON COMMIT DELETE ROWS
"""

_EPOCH = "'1970-01-01 00:00:00+00'::timestamptz"

# Minutes touched by the claimed batches. Minutes older than the raw retention horizon are
# left alone: their raw rows may be gone, and recomputing would shrink a correct rollup.
_DIRTY = f"""
INSERT INTO rollup_dirty
SELECT DISTINCT device_id, metric, date_bin('1 minute', ts, {_EPOCH})
FROM readings
WHERE received_at BETWEEN $1 AND $2 AND ts BETWEEN $3 AND $4
  AND ts >= $5
"""

# Per dirty minute an index range scan (LATERAL): linear in the number of dirty minutes,
# where a join on (device, metric) with the minute as a filter grows quadratically with a
# long backfill.
_MINUTES = """
INSERT INTO readings_1m AS t
    (device_id, metric, bucket, count, sum, min, max, first_ts, first, last_ts, last)
SELECT d.device_id, d.metric, d.bucket, a.*
FROM rollup_dirty d
CROSS JOIN LATERAL (
    SELECT count(*) AS n, sum(r.value) AS s, min(r.value) AS lo, max(r.value) AS hi,
           min(r.ts) AS t1, (array_agg(r.value ORDER BY r.ts))[1] AS v1,
           max(r.ts) AS t2, (array_agg(r.value ORDER BY r.ts DESC))[1] AS v2
    FROM readings r
    WHERE r.device_id = d.device_id AND r.metric = d.metric
      AND r.ts >= d.bucket AND r.ts < d.bucket + interval '1 minute'
) a
WHERE a.n > 0
ON CONFLICT (device_id, metric, bucket) DO UPDATE
SET count = EXCLUDED.count, sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max,
    first_ts = EXCLUDED.first_ts, first = EXCLUDED.first,
    last_ts = EXCLUDED.last_ts, last = EXCLUDED.last
"""

_HOURS = f"""
INSERT INTO readings_1h AS t
    (device_id, metric, bucket, count, sum, min, max, first_ts, first, last_ts, last)
SELECT h.device_id, h.metric, h.hour, a.*
FROM (SELECT DISTINCT device_id, metric, date_bin('1 hour', bucket, {_EPOCH}) AS hour
      FROM rollup_dirty) h
CROSS JOIN LATERAL (
    SELECT sum(m.count)::bigint AS n, sum(m.sum) AS s, min(m.min) AS lo, max(m.max) AS hi,
           min(m.first_ts) AS t1, (array_agg(m.first ORDER BY m.first_ts))[1] AS v1,
           max(m.last_ts) AS t2, (array_agg(m.last ORDER BY m.last_ts DESC))[1] AS v2
    FROM readings_1m m
    WHERE m.device_id = h.device_id AND m.metric = h.metric
      AND m.bucket >= h.hour AND m.bucket < h.hour + interval '1 hour'
) a
WHERE a.n IS NOT NULL
ON CONFLICT (device_id, metric, bucket) DO UPDATE
SET count = EXCLUDED.count, sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max,
    first_ts = EXCLUDED.first_ts, first = EXCLUDED.first,
    last_ts = EXCLUDED.last_ts, last = EXCLUDED.last
"""

# Only the days that get rows: one late reading must not create a month of empty partitions.
_DAYS = "SELECT DISTINCT (bucket AT TIME ZONE 'UTC')::date FROM rollup_dirty ORDER BY 1"


@dataclass(frozen=True, slots=True)
class RefreshResult:
    batches: int = 0
    minutes: int = 0
    hours: int = 0

    def __add__(self, other: RefreshResult) -> RefreshResult:
        return RefreshResult(
            self.batches + other.batches, self.minutes + other.minutes, self.hours + other.hours
        )


async def refresh_once(
    conn: asyncpg.Connection, raw_horizon: datetime, max_batches: int = 500
) -> RefreshResult:
    """Fold up to ``max_batches`` pending ingest batches into the rollups."""
    await conn.execute(_DIRTY_TABLE)
    async with conn.transaction():
        claimed = await conn.fetch(_CLAIM, max_batches)
        if not claimed:
            return RefreshResult()
        lo = min(r["received_lo"] for r in claimed)
        hi = max(r["received_hi"] for r in claimed)
        first = min(r["min_ts"] for r in claimed)
        last = max(r["max_ts"] for r in claimed)
        await conn.execute(_DIRTY, lo, hi, first, last, raw_horizon)
        days = [r[0] for r in await conn.fetch(_DAYS)]
        minutes = hours = 0
        if days:
            await conn.executemany(
                "SELECT ensure_range_partitions('readings_1m', 'day', $1, $1),"
                "       ensure_range_partitions('readings_1h', 'month', $1, $1)",
                [(day,) for day in days],
            )
            minutes = int((await conn.execute(_MINUTES)).rsplit(" ", 1)[1])
            hours = int((await conn.execute(_HOURS)).rsplit(" ", 1)[1])
        await conn.execute(
            "DELETE FROM rollup_pending WHERE id = ANY($1::bigint[])", [r["id"] for r in claimed]
        )
    return RefreshResult(len(claimed), minutes, hours)


async def refresh_rollups(
    conn: asyncpg.Connection, raw_horizon: datetime, max_batches: int = 500, max_rounds: int = 100
) -> RefreshResult:
    """Fold everything pending (in rounds of ``max_batches``, each its own transaction)."""
    total = RefreshResult()
    for _ in range(max_rounds):
        result = await refresh_once(conn, raw_horizon, max_batches)
        total += result
        if result.batches < max_batches:
            break
    return total


# The oldest batch not folded yet (ids grow with inserts; the table holds a few rows between
# runs): everything received before it is in the rollups.
_BACKLOG = """
SELECT coalesce(extract(epoch FROM now() - (
    SELECT received_lo FROM rollup_pending ORDER BY id LIMIT 1
)), 0)::float8
"""


async def rollup_backlog_seconds(conn: asyncpg.Connection) -> float:
    """How far the rollups are behind: now minus the receive time of the oldest reading not
    folded in yet; 0 when nothing is pending."""
    return max(0.0, float(await conn.fetchval(_BACKLOG)))
