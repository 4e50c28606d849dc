"""Query latency: rollup path vs raw rows vs naive SQL, over 10 M readings, in one run.

    .venv/bin/python -m bench.query                                    # full run (~7 minutes)
    .venv/bin/python -m bench.query --devices 50 --points 600 --reps 20  # quick check

1. A fresh database (migrations, one daily partition) gets the fleet: --devices x --metrics x
   --points readings, one per second per device, each device's window at its own offset so
   the fleet covers one UTC day, plus one dense device reporting every metric every second
   for the whole day. Rows go in in time order, as the ingest would store them, so a
   device's rows are spread over the day's heap rather than clustered; latest_values gets
   each series' last reading, as the ingest keeps it (the query layer reads it).
2. One rollup_pending row covering everything; refresh_rollups() folds it (timed).
3. Per group (fleet devices, the dense device), each case on its own random devices,
   --warmup then --reps repetitions (fewer if a case passes --case-seconds):
   rollup    one day, 1m buckets, avg, every metric, run_query source=auto (readings_1m)
   raw       the same with source=raw (raw rows through the same merge SQL)
   naive     SELECT metric, date_trunc('minute', ts), avg(value) ... GROUP BY, one statement
   raw_hour  one hour of raw rows, no bucket, run_query limit 10000
   rollup, raw and naive must give the same buckets and values; a mismatch stops the run.

Target (issue 5): rollup p50 < 50 ms and at least 20x faster than naive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.services import DEFAULT_ADMIN, fresh_database
from storage.migrate import migrate
from storage.query_spec import TelemetryQuery, parse_query
from storage.rollups import refresh_rollups
from storage.telemetry import Page, run_query

DAY = datetime(2026, 11, 20, tzinfo=UTC)
NOW = DAY + timedelta(days=2)  # "now" for parse_query; only relative times would use it
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)  # raw horizon: every minute may be recomputed
DAY_S = 86_400
DENSE_ID = "dense-0"
METRICS = [("temperature", "C"), ("humidity", "%"), ("pressure", "hPa"), ("battery", "V")]
METRICS += [("rssi", "dBm")]
NAIVE_SQL = """
SELECT metric, date_trunc('minute', ts) b, avg(value) FROM readings
WHERE device_id = $1 AND ts >= $2 AND ts < $3 GROUP BY 1, 2 ORDER BY 1, 2
"""
CASES = ("rollup", "raw", "naive", "raw_hour")
TARGET_P50_MS = 50.0
TARGET_RATIO = 20.0


@dataclass(frozen=True, slots=True)
class Dataset:
    devices: int
    metrics: int
    points: int

    @property
    def metric_names(self) -> list[str]:
        return [METRICS[k][0] if k < len(METRICS) else f"metric{k}" for k in range(self.metrics)]

    @property
    def units(self) -> list[str]:
        return [METRICS[k][1] if k < len(METRICS) else "" for k in range(self.metrics)]

    @property
    def readings(self) -> int:
        return self.devices * self.metrics * self.points

    @property
    def dense_readings(self) -> int:
        return self.metrics * DAY_S

    def device_id(self, i: int) -> str:
        return f"dev-{i:05d}"

    def offset_s(self, i: int) -> int:
        """Second of the day device i starts reporting; the same formula as _LOAD."""
        return i * (DAY_S - self.points) // self.devices


# What the ingest keeps next to the readings: the last reading of every series.
_LATEST = """
INSERT INTO latest_values (device_id, metric, ts, value, unit, received_at)
SELECT DISTINCT ON (device_id, metric) device_id, metric, ts, value, unit, received_at
FROM readings ORDER BY device_id, metric, ts DESC
"""

# One slice [$4, $5) of the day's seconds, in time order. $1 devices, $2 points,
# $3 the span offsets spread over, $6/$7 metric names/units, $8 the day, $9 the dense id.
# The value is smooth plus a little deterministic noise, so every bucket's avg differs.
_VALUE = "20 + 10 * sin(s / 900.0 + {d}) + 5 * k + ((s * 7919 + {d} * 104729 + k * 31) % 1000)"
_LOAD = f"""
INSERT INTO readings (device_id, metric, ts, value, unit, received_at)
SELECT device_id, metric, ts, value, unit, ts + interval '40 milliseconds'
FROM (
    SELECT 'dev-' || lpad(d::text, 5, '0') AS device_id, m.metric, m.unit,
           $8::timestamptz + s * interval '1 second' AS ts,
           {_VALUE.format(d="d")} / 1000.0::float8 AS value
    FROM generate_series(0::bigint, $1::bigint - 1) d
    CROSS JOIN LATERAL generate_series(
        greatest($4::bigint, d * $3 / $1), least($5::bigint, d * $3 / $1 + $2) - 1) s
    CROSS JOIN unnest($6::text[], $7::text[]) WITH ORDINALITY m(metric, unit, k)
    UNION ALL
    SELECT $9::text, m.metric, m.unit, $8::timestamptz + s * interval '1 second',
           {_VALUE.format(d="-1")} / 1000.0::float8
    FROM generate_series($4::bigint, $5::bigint - 1) s
    CROSS JOIN unnest($6::text[], $7::text[]) WITH ORDINALITY m(metric, unit, k)
) x
ORDER BY ts, device_id, metric
"""


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile: p99 of 200 samples is the second slowest, not an average."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def command_line() -> str:
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else "python"
    return shlex.join([python, "-m", "bench.query", *sys.argv[1:]])


async def load(conn: asyncpg.Connection, ds: Dataset, chunk_s: int) -> dict[str, Any]:
    """Generate the day in slices of chunk_s seconds, each sorted by time (ingest order)."""
    await migrate(conn)
    await conn.execute("SELECT ensure_readings_partitions($1::date, $1::date)", DAY.date())
    await conn.execute("SET work_mem = '256MB'")  # each slice sorts in memory
    t0 = time.perf_counter()
    for lo in range(0, DAY_S, chunk_s):
        await conn.execute(
            _LOAD,
            ds.devices,
            ds.points,
            DAY_S - ds.points,
            lo,
            min(lo + chunk_s, DAY_S),
            ds.metric_names,
            ds.units,
            DAY,
            DENSE_ID,
        )
        print(f"  load: {(lo + chunk_s) / DAY_S:4.0%}", end="\r", flush=True)
    seconds = time.perf_counter() - t0
    await conn.execute(_LATEST)
    await conn.execute("RESET work_mem")
    rows = int(await conn.fetchval("SELECT count(*) FROM readings"))
    expected = ds.readings + ds.dense_readings
    if rows != expected:
        raise SystemExit(f"load: {rows:,} rows stored, expected {expected:,}")
    print(f"  load: {rows:,} readings in {seconds:.1f}s", flush=True)
    return {"readings": rows, "seconds": round(seconds, 1), "readings_per_s": round(rows / seconds)}


async def vacuum_analyze(conn: asyncpg.Connection) -> float:
    """Sets hint bits and the visibility map and gives the planner statistics, as autovacuum
    would have long before anyone queries a day of data."""
    t0 = time.perf_counter()
    await conn.execute("VACUUM (ANALYZE)")
    return round(time.perf_counter() - t0, 1)


async def refresh(conn: asyncpg.Connection) -> dict[str, Any]:
    """One pending row covering the whole load, folded by the rollup job (timed)."""
    await conn.execute(
        "INSERT INTO rollup_pending (min_ts, max_ts, received_lo, received_hi) "
        "SELECT min(ts), max(ts), min(received_at), max(received_at) FROM readings"
    )
    rows = int(await conn.fetchval("SELECT count(*) FROM readings"))
    t0 = time.perf_counter()
    result = await refresh_rollups(conn, raw_horizon=LONG_AGO)
    seconds = time.perf_counter() - t0
    pending = await conn.fetchval("SELECT count(*) FROM rollup_pending")
    if pending:
        raise SystemExit(f"refresh: {pending} rollup_pending rows left")
    print(f"  refresh: {rows:,} readings folded in {seconds:.1f}s", flush=True)
    return {
        **asdict(result),
        "readings": rows,
        "seconds": round(seconds, 1),
        "readings_per_s": round(rows / seconds),
    }


@dataclass(frozen=True, slots=True)
class Target:
    """What one repetition asks about: a device, its day and one hour of its data."""

    device_id: str
    hour_start: datetime

    def bucketed(self, source: str) -> TelemetryQuery:
        params = {"device_id": self.device_id, "from": DAY.isoformat()}
        params |= {"to": (DAY + timedelta(days=1)).isoformat(), "bucket": "1m", "agg": "avg"}
        return parse_query({**params, "source": source, "limit": 10_000}, NOW)

    def hour(self) -> TelemetryQuery:
        end = self.hour_start + timedelta(hours=1)
        params = {"device_id": self.device_id, "from": self.hour_start.isoformat()}
        return parse_query({**params, "to": end.isoformat(), "limit": 10_000}, NOW)


def fleet_target(ds: Dataset, rnd: random.Random) -> Target:
    """A random fleet device; its hour starts at the minute its window starts (all its data)."""
    i = rnd.randrange(ds.devices)
    start = DAY + timedelta(seconds=ds.offset_s(i) // 60 * 60)
    return Target(ds.device_id(i), start)


def dense_target(_ds: Dataset, rnd: random.Random) -> Target:
    return Target(DENSE_ID, DAY + timedelta(hours=rnd.randrange(24)))


async def run_case(conn: asyncpg.Connection, case: str, t: Target) -> int:
    """One repetition; returns the rows it got back."""
    if case == "naive":
        rows = await conn.fetch(NAIVE_SQL, t.device_id, DAY, DAY + timedelta(days=1))
        return len(rows)
    query = t.hour() if case == "raw_hour" else t.bucketed("raw" if case == "raw" else "auto")
    return (await run_query(conn, query)).count


async def explained(conn: asyncpg.Connection, run: Callable[[], Awaitable[Any]]) -> str:
    """EXPLAIN ANALYZE of every statement run() sends, for the report (not timed).

    auto_explain rather than EXPLAIN on rebuilt SQL: it shows exactly what run_query sent,
    with the plan the connection's plan cache really used (custom or generic)."""
    plans: list[str] = []

    def listener(_conn: Any, msg: Any) -> None:
        plans.append(msg.message)

    conn.add_log_listener(listener)
    await conn.execute(
        "LOAD 'auto_explain'; SET auto_explain.log_level = notice;"
        "SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on;"
        "SET auto_explain.log_min_duration = 0"
    )
    await run()
    await conn.execute("SET auto_explain.log_min_duration = -1")  # also flushes the notices
    conn.remove_log_listener(listener)
    return "\n\n".join(plans)


async def measure(
    url: str, case: str, pick: Callable[[], Target], args: argparse.Namespace
) -> dict[str, Any]:
    """Latency of one case on fresh random targets.

    Each case gets its own connection, so neither the shared buffers warmed with a device's
    rows nor a plan cache built by another case (PostgreSQL switches a prepared statement
    to a generic plan after five runs) depends on the order of the cases. The naive SQL
    is planned for every execution, as psql would: its generic plan for an average
    device is an index scan, over twice as slow as the custom plan for the dense device.
    A case slower than a second per query stops at --case-seconds (at least --min-reps)."""
    custom = {"plan_cache_mode": "force_custom_plan"} if case == "naive" else {}
    conn = await asyncpg.connect(url, server_settings=custom)
    try:
        for _ in range(args.warmup):
            await run_case(conn, case, pick())
        ms: list[float] = []
        rows = 0
        deadline = time.monotonic() + args.case_seconds
        while len(ms) < args.reps and (len(ms) < args.min_reps or time.monotonic() < deadline):
            target = pick()
            t0 = time.perf_counter()
            rows += await run_case(conn, case, target)
            ms.append((time.perf_counter() - t0) * 1000)
        plan = await explained(conn, lambda: run_case(conn, case, pick()))
    finally:
        await conn.close()
    reps = len(ms)
    return {
        "reps": reps,
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "mean_ms": round(sum(ms) / reps, 2),
        "max_ms": round(max(ms), 2),
        "rows_per_query": round(rows / reps, 1),
        "plan": plan,
    }


def flatten(page: Page) -> dict[tuple[str, datetime], float | None]:
    if page.next_cursor is not None:
        raise SystemExit("check: a one-day 1m answer was cut by the limit")
    return {(s.metric, ts): v for s in page.series for ts, v in s.points}


def same(a: dict[tuple[str, datetime], Any], b: dict[tuple[str, datetime], Any]) -> bool:
    # Sums are added in a different order (per minute, then merged), so floats differ in the
    # last bits; anything beyond that is a wrong answer.
    return a.keys() == b.keys() and all(
        math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-9) for k in a
    )


async def check(conn: asyncpg.Connection, targets: list[Target]) -> int:
    """rollup == raw == naive for every target, or stop the run; returns buckets compared."""
    compared = 0
    for t in targets:
        rollup = flatten(await run_query(conn, t.bucketed("auto")))
        raw = flatten(await run_query(conn, t.bucketed("raw")))
        naive_rows = await conn.fetch(NAIVE_SQL, t.device_id, DAY, DAY + timedelta(days=1))
        naive = {(r[0], r[1]): r[2] for r in naive_rows}
        if not rollup or not same(rollup, raw) or not same(rollup, naive):
            diff = sorted(set(rollup.items()) ^ set(raw.items()))[:5]
            raise SystemExit(
                f"MISMATCH for {t.device_id}: rollup {len(rollup)} buckets, raw {len(raw)}, "
                f"naive {len(naive)}; first differences {diff}"
            )
        compared += len(rollup)
    return compared


async def bench_group(
    url: str,
    pick: Callable[[random.Random], Target],
    args: argparse.Namespace,
    rnd: random.Random,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for case in CASES:
        out[case] = await measure(url, case, lambda: pick(rnd), args)
        shown = {k: v for k, v in out[case].items() if k != "plan"}
        print(f"    {case:9} {shown}", flush=True)
    rollup = out["rollup"]
    naive_ratio = out["naive"]["p50_ms"] / rollup["p50_ms"]
    out["ratios"] = {
        "naive_over_rollup_p50": round(naive_ratio, 1),
        "raw_over_rollup_p50": round(out["raw"]["p50_ms"] / rollup["p50_ms"], 1),
        "naive_over_rollup_p99": round(out["naive"]["p99_ms"] / rollup["p99_ms"], 1),
        "raw_over_rollup_p99": round(out["raw"]["p99_ms"] / rollup["p99_ms"], 1),
    }
    out["targets"] = {
        "rollup_p50_under_50ms": rollup["p50_ms"] < TARGET_P50_MS,
        "naive_over_rollup_at_least_20x": naive_ratio >= TARGET_RATIO,
    }
    return out


def print_summary(results: dict[str, Any]) -> None:
    load, ref = results["load"], results["refresh"]
    print(f"\nload {load['readings']:,} readings: {load['seconds']}s")
    print(
        f"rollup refresh: {ref['readings']:,} readings in {ref['seconds']}s = "
        f"{ref['readings_per_s']:,} readings/s ({ref['minutes']:,} minute rows, "
        f"{ref['hours']:,} hour rows)"
    )
    print(f"check: rollup == raw == naive on {results['check_buckets']:,} buckets")
    print(f"\n{'group':6} {'case':9} {'p50 ms':>9} {'p99 ms':>9} {'rows':>8} {'reps':>5}")
    for group in ("fleet", "dense"):
        for case in CASES:
            r = results[group][case]
            print(
                f"{group:6} {case:9} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f} "
                f"{r['rows_per_query']:8.0f} {r['reps']:5}"
            )
    for group in ("fleet", "dense"):
        ratios, targets = results[group]["ratios"], results[group]["targets"]
        met = "MET" if all(targets.values()) else "NOT MET"
        print(
            f"{group}: naive/rollup {ratios['naive_over_rollup_p50']}x, raw/rollup "
            f"{ratios['raw_over_rollup_p50']}x (p50); target (<{TARGET_P50_MS:.0f} ms p50, "
            f">={TARGET_RATIO:.0f}x naive): {met} {targets}"
        )


def write_results(results: dict[str, Any]) -> Path:
    results_dir = Path(__file__).parent / "results"
    results_dir.mkdir(exist_ok=True)
    path = results_dir / f"query-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    return path


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    ds = Dataset(args.devices, args.metrics, args.points)
    conn = await asyncpg.connect(url)
    try:
        server = {
            "version": await conn.fetchval("SHOW server_version"),
            "shared_buffers": await conn.fetchval("SHOW shared_buffers"),
            "jit": await conn.fetchval("SHOW jit"),
        }
        results: dict[str, Any] = {"command": command_line(), "cpus": os.cpu_count()}
        results |= {"postgres": server, "dataset": asdict(ds) | {"dense_device": DENSE_ID}}
        results["load"] = await load(conn, ds, args.chunk_seconds)
        results["load"]["vacuum_analyze_s"] = await vacuum_analyze(conn)
        results["refresh"] = await refresh(conn)
        results["refresh"]["vacuum_analyze_s"] = await vacuum_analyze(conn)
        rnd = random.Random(args.seed)
        groups: dict[str, Callable[[random.Random], Target]] = {
            "fleet": lambda r: fleet_target(ds, r),
            "dense": lambda r: dense_target(ds, r),
        }
        checked = [fleet_target(ds, rnd) for _ in range(args.check_devices)]
        results["check_buckets"] = await check(conn, [*checked, dense_target(ds, rnd)])
        for group, pick in groups.items():
            print(f"  {group}:", flush=True)
            results[group] = await bench_group(url, pick, args, rnd)
        return results
    finally:
        await conn.close()


async def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--database-url",
        default=DEFAULT_ADMIN,
        help="admin URL; the bench database is created next to it",
    )
    p.add_argument("--database-name", default="tb_bench_query")
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--metrics", type=int, default=5)
    p.add_argument("--points", type=int, default=2000, help="readings per device and metric")
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--min-reps", type=int, default=30, help="even past --case-seconds")
    p.add_argument("--case-seconds", type=float, default=60, help="time cap per case")
    p.add_argument("--check-devices", type=int, default=50, help="fleet devices compared")
    p.add_argument("--chunk-seconds", type=int, default=3600, help="load slice (of the day)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--explain", action="store_true", help="also print the EXPLAIN ANALYZE plans")
    p.add_argument("--keep", action="store_true", help="keep the bench database")
    args = p.parse_args()
    if not 1 <= args.points <= DAY_S - 60 or args.devices < 1 or args.metrics < 1:
        p.error("--devices and --metrics at least 1, --points from 1 to 86340")

    print(f"$ {command_line()}", flush=True)
    bench_database = fresh_database(
        args.database_url, name=args.database_name, migrate=False, keep=args.keep
    )  # load() migrates
    async with bench_database as url:
        results = await run(args, url)
    if args.explain:
        for group in ("fleet", "dense"):
            for case in CASES:
                print(f"\n--- EXPLAIN {group} {case}\n{results[group][case]['plan']}")
    print_summary(results)
    print(f"\nresults: {write_results(results)}")


if __name__ == "__main__":
    asyncio.run(main())
