"""Runs a :class:`~storage.query_spec.TelemetryQuery` against raw readings or the rollups.

Bucketed queries read the coarsest source that answers them exactly: buckets that are whole
hours read ``readings_1h``, whole minutes ``readings_1m``, anything else raw rows. Minutes
that still have unprocessed ingest batches (``rollup_pending``) are read from raw rows in
the same statement, so a rollup answer never lags what is stored. Every source yields the
same partial aggregates (count, sum, min, max, first, last), merged the same way, which is
why the answer does not depend on the source (tested against raw).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from storage.query_spec import Cursor, TelemetryQuery

STATEMENT_TIMEOUT_MS = 30_000

# The same series filter for every source; $1 devices, $2 metrics (always a list: see
# _metrics). Kept free of "IS NULL OR" so that a cached generic plan still seeks the index
# on (device_id, metric, time) instead of reading every entry of the device.
_SERIES = "device_id = ANY($1::text[]) AND metric = ANY($2::text[])"

_RAW = f"""
SELECT device_id, metric, ts, value FROM readings
WHERE {_SERIES} AND ts >= $3 AND ts < $4
  AND ($5::text IS NULL OR (device_id, metric, ts) > ($5::text, $6::text, $7::timestamptz))
ORDER BY device_id, metric, ts
"""

# Partial aggregates of one row: the shape every source is brought to before merging.
_RAW_PARTS = f"""
SELECT device_id, metric, ts AS t0, 1::bigint AS count, value AS sum, value AS min,
       value AS max, ts AS first_ts, value AS first, ts AS last_ts, value AS last
FROM readings WHERE {_SERIES} AND ts >= {{lo}} AND ts < {{hi}}
"""

_ROLLUP_PARTS = f"""
SELECT device_id, metric, bucket AS t0, count, sum, min, max, first_ts, first, last_ts, last
FROM {{table}} WHERE {_SERIES} AND bucket >= {{lo}} AND bucket < {{hi}}
"""

# The oldest reading not yet folded into the rollups ('infinity' when all are).
_STALE = "(SELECT coalesce(min(min_ts), 'infinity') FROM rollup_pending)"
_EPOCH = "'1970-01-01 00:00:00+00'::timestamptz"

_MERGE = {
    "avg": "sum(sum) / sum(count)",
    "sum": "sum(sum)",
    "count": "sum(count)::double precision",
    "min": "min(min)",
    "max": "max(max)",
    "first": "(array_agg(first ORDER BY first_ts))[1]",
    "last": "(array_agg(last ORDER BY last_ts DESC))[1]",
}


@dataclass(slots=True)
class Series:
    device_id: str
    metric: str
    points: list[tuple[datetime, float | None]] = field(default_factory=list)


@dataclass(slots=True)
class Page:
    series: list[Series]
    next_cursor: Cursor | None  # set when the limit cut the answer short

    @property
    def count(self) -> int:
        return sum(len(s.points) for s in self.series)


def source_for(query: TelemetryQuery) -> str:
    """``raw``, ``1m`` or ``1h``: the coarsest source whose buckets tile the query's."""
    bucket = query.bucket_s
    if bucket is None or query.source == "raw":
        return "raw"
    if bucket % 3600 == 0:
        return "1h"
    if bucket % 60 == 0:
        return "1m"
    return "raw"


_MINUTE = f"date_bin('1 minute', {_STALE}, {_EPOCH})"
_HOUR = f"date_bin('1 hour', {_STALE}, {_EPOCH})"

# One rollup row is one bucket when the bucket is the rollup's own size: no merge needed.
_SINGLE = {
    "avg": "sum / count",
    "sum": "sum",
    "count": "count::double precision",
    "min": "min",
    "max": "max",
    "first": "first",
    "last": "last",
}


def _parts(source: str, lo: str = "$3") -> str:
    """Partial aggregates over [lo, $4) from the source, raw rows for the stale tail."""
    if source == "raw":
        return _RAW_PARTS.format(lo=lo, hi="$4")
    if source == "1m":
        return " UNION ALL ".join(
            [
                _ROLLUP_PARTS.format(table="readings_1m", lo=lo, hi=f"LEAST($4, {_MINUTE})"),
                _RAW_PARTS.format(lo=f"GREATEST({lo}, {_MINUTE})", hi="$4"),
            ]
        )
    return " UNION ALL ".join(
        [
            _ROLLUP_PARTS.format(table="readings_1h", lo=lo, hi=f"LEAST($4, {_HOUR})"),
            _ROLLUP_PARTS.format(
                table="readings_1m", lo=f"GREATEST({lo}, {_HOUR})", hi=f"LEAST($4, {_MINUTE})"
            ),
            _RAW_PARTS.format(lo=f"GREATEST({lo}, {_MINUTE})", hi="$4"),
        ]
    )


def _grouped(parts: str, agg: str) -> str:
    return f"""
    SELECT device_id, metric, date_bin($8::interval, t0, {_EPOCH}) AS b, {_MERGE[agg]} AS v
    FROM ({parts}) parts GROUP BY 1, 2, 3
    """


def aggregate_sql(query: TelemetryQuery) -> str:
    """(device_id, metric, b, v) for every non-empty bucket."""
    source = source_for(query)
    exact = {"1m": 60, "1h": 3600}.get(source) == query.bucket_s
    if not exact:
        return _grouped(_parts(source), query.agg)
    # Rollup rows are the answer up to the stale edge; only the tail is merged.
    table, edge, tail = (
        ("readings_1m", _MINUTE, "raw") if source == "1m" else ("readings_1h", _HOUR, "1m")
    )
    direct = f"""
    SELECT device_id, metric, bucket AS b, {_SINGLE[query.agg]} AS v FROM {table}
    WHERE {_SERIES} AND bucket >= $3 AND bucket < LEAST($4, {edge})
    """
    return direct + " UNION ALL " + _grouped(_parts(tail, f"GREATEST($3, {edge})"), query.agg)


def bucketed_sql(query: TelemetryQuery) -> str:
    """$1 devices, $2 metrics, $3 start, $4 end, $5..$7 cursor, $8 bucket."""
    agg = aggregate_sql(query)
    cursor = "($5::text IS NULL OR (device_id, metric, b) > ($5::text, $6::text, $7::timestamptz))"
    if query.fill == "none":
        return f"SELECT * FROM ({agg}) a WHERE {cursor} ORDER BY device_id, metric, b"
    if query.metrics is not None:
        series = "SELECT d, m FROM unnest($1::text[]) d CROSS JOIN unnest($2::text[]) m"
    else:
        series = "SELECT DISTINCT device_id, metric FROM agg"
    value = {
        "null": "v",
        "zero": "coalesce(v, 0)",
        # carry the last value forward: rows after a value share its running count
        "previous": "first_value(v) OVER (PARTITION BY device_id, metric, grp ORDER BY b)",
    }[query.fill]
    return f"""
    WITH agg AS ({agg}),
    grid AS (
        SELECT s.d AS device_id, s.m AS metric, g.b
        FROM ({series}) s(d, m)
        CROSS JOIN generate_series($3::timestamptz, $4::timestamptz - $8::interval, $8::interval)
            g(b)
    ),
    joined AS (
        SELECT g.device_id, g.metric, g.b, a.v,
               count(a.v) OVER (PARTITION BY g.device_id, g.metric ORDER BY g.b) AS grp
        FROM grid g LEFT JOIN agg a USING (device_id, metric, b)
    )
    SELECT device_id, metric, b, {value} AS v FROM joined
    WHERE {cursor} ORDER BY device_id, metric, b
    """


# Every metric a device ever stored has a latest value.
_KNOWN_METRICS = "SELECT DISTINCT metric FROM latest_values WHERE device_id = ANY($1::text[])"


async def _metrics(conn: asyncpg.Connection, query: TelemetryQuery) -> list[str]:
    """The metrics to read. The indexes lead with (device_id, metric, time): without the
    metric, PostgreSQL can bound an index scan by device only and reads every entry of the
    device in the partition; naming the metrics lets it seek straight to the time range."""
    if query.metrics is not None:
        return list(query.metrics)
    return [r[0] for r in await conn.fetch(_KNOWN_METRICS, list(query.devices))]


def sql_and_args(query: TelemetryQuery, metrics: list[str]) -> tuple[str, list[Any]]:
    cursor = query.cursor
    args: list[Any] = [
        list(query.devices),
        metrics,
        query.start,
        query.end,
        cursor.device_id if cursor else None,
        cursor.metric if cursor else None,
        cursor.ts if cursor else None,
    ]
    if query.bucket is None:
        sql = _RAW
    else:
        sql = bucketed_sql(query)
        args.append(query.bucket)
    if query.limit is not None:
        # one row more than asked tells whether there is a next page
        sql += f" LIMIT {int(query.limit) + 1}"
    return sql, args


async def run_query(conn: asyncpg.Connection, query: TelemetryQuery) -> Page:
    """One page of the answer, grouped into series."""
    async with conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
        sql, args = sql_and_args(query, await _metrics(conn, query))
        rows = await conn.fetch(sql, *args)
    next_cursor = None
    if query.limit is not None and len(rows) > query.limit:
        rows = rows[: query.limit]
        last = rows[-1]
        next_cursor = Cursor(last[0], last[1], last[2])
    series: list[Series] = []
    for device_id, metric, ts, value in rows:
        if not series or series[-1].device_id != device_id or series[-1].metric != metric:
            series.append(Series(device_id, metric))
        series[-1].points.append((ts, value))
    return Page(series, next_cursor)


async def stream_rows(
    conn: asyncpg.Connection, query: TelemetryQuery, prefetch: int = 2000
) -> AsyncIterator[list[tuple[str, str, datetime, float | None]]]:
    """The whole answer in chunks, through a server-side cursor: memory stays flat however
    long the range (CSV export)."""
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL statement_timeout = 0")
        sql, args = sql_and_args(query, await _metrics(conn, query))
        cur = await conn.cursor(sql, *args)
        while True:
            rows = await cur.fetch(prefetch)
            if not rows:
                return
            yield [(r[0], r[1], r[2], r[3]) for r in rows]
