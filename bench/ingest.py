"""Ingest throughput and latency, with the naive consumer and the database limit in one run.

    .venv/bin/python -m bench.ingest                    # full run (~6 minutes)
    .venv/bin/python -m bench.ingest --messages 100000  # shorter
    .venv/bin/python -m bench.ingest --phases drain,drain2 --messages 200000  # 1 vs 2 ingests

Phases, each against its own fresh database and the same private mosquitto (the project's
mosquitto.conf on a free port):

1. drain: publish a backlog of N messages (1,000 devices x 5 metrics, QoS 1, several publisher
   processes, every PUBACK awaited) while the ingest is stopped; start the ingest and measure
   readings/s from the first to the last received_at. This is how fast the ingest drains what
   the broker holds, with no publisher competing for the 2 cores. CPU microseconds per stored
   reading of the ingest, of every PostgreSQL process and of the private mosquitto
   (bench/cpu.py) are reported with it; ratios drain/limit-* close the report.
2. naive: the same kind of backlog, consumed by one INSERT per reading in autocommit.
3. limit-bare / limit-own (bench/ingest_limits.py): the database's own ceiling, every row
   built before the clock starts: the idempotent COPY path into a bare primary key, and the
   ingest's own write (ReadingWriter) into the project's schema on one and on two connections.
   (``limit``: the older variant, rows built batch by batch between timed writes.)
4. mapped (bench/mapped.py, not in the default phases): the drain of a mapped firmware format
   (Tasmota SENSOR JSON, 5 readings a message) next to the bridge's own format in the same
   run, both through an ingest on this process's event loop; ``--mapped-messages`` each.
5. live: the fleet publishes at a steady rate while the ingest runs; the ingest reports
   device-timestamp -> commit latency p50/p99.

Zero loss is checked in phases 1 and 4: rows stored == readings the broker acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench import cpu
from bench import ingest_limits as limits
from bench.mapped import phase_mapped
from bench.services import (
    DEFAULT_ADMIN,
    fresh_database,
    ingest_env,
    ingest_processes,
    mosquitto,
    wait_log,
)
from bridge.simulate import Fleet, SimulateConfig
from bridge.simulate import run as simulate
from ingest.payload import parse_telemetry
from ingest.topics import Topics
from storage.readings import READING_COLUMNS

DEVICES = 1000
METRICS = 5


async def count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM readings"))
    finally:
        await conn.close()


def publish(
    mqtt_url: str, prefix: str, messages: int, rate: float, processes: int
) -> dict[str, Any]:
    with open(os.devnull, "w") as quiet:
        return simulate(
            SimulateConfig(
                mqtt_url=mqtt_url,
                devices=DEVICES,
                rate=rate / DEVICES,
                metrics=METRICS,
                count=messages,
                processes=processes,
                topic_prefix=prefix,
                id_prefix="bench",
            ),
            out=sys.stdout,
            progress=quiet,
        )


async def wait_rows(url: str, expected: int, within: float, interval: float = 1.0) -> int:
    end = time.monotonic() + within
    n = 0
    while time.monotonic() < end:
        n = await count(url)
        if n >= expected:
            return n
        await asyncio.sleep(interval)
    return n


async def phase_drain(
    args: argparse.Namespace, mqtt_url: str, mosquitto_pid: int, tmp: Path, ingests: int = 1
) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    async with fresh_database(args.admin_url) as url:
        env = ingest_env(url, mqtt_url, prefix)
        log = tmp / f"drain-{ingests}.log"
        with ingest_processes(env, log, ingests):
            wait_log(log, "ingest subscribed", ingests)
        # stopped: the persistent sessions now queue everything for the next run
        print(f"drain: publishing a backlog of {args.messages:,} messages ...", flush=True)
        t0 = time.monotonic()
        pub = publish(mqtt_url, prefix, args.messages, 1e6, args.publishers)
        print(f"drain: backlog published in {time.monotonic() - t0:.1f}s", flush=True)
        expected = pub["messages_acked"] * METRICS
        with ingest_processes(env, log, ingests) as procs:
            # CPU from the moment the ingests are subscribed (their start-up is not the
            # drain's) to the moment every row is stored, before they are stopped.
            wait_log(log, "ingest subscribed", 2 * ingests, timeout=60)
            parties = {"ingest": [p.pid for p in procs], "mosquitto": [mosquitto_pid]}
            cpu_before = cpu.snapshot(parties)
            stored = await wait_rows(
                url, expected, within=args.messages / 1000 + 120, interval=0.25
            )
            all_stored_at = time.time()  # within one poll (+ one count(*)) of the last commit
            spent = cpu.snapshot(parties).minus(cpu_before)
        results_dir = Path(__file__).parent / "results"
        results_dir.mkdir(exist_ok=True)
        (results_dir / "drain-ingest.log").write_text(log.read_text())
        conn = await asyncpg.connect(url)
        # From the first message the ingest received to the moment every row was committed.
        # (Not max(received_at): a broker that overruns the in-flight window makes receiving
        # finish long before storing does; an earlier version of this benchmark measured that.)
        first = await conn.fetchval("SELECT extract(epoch FROM min(received_at)) FROM readings")
        await conn.close()
    span = all_stored_at - float(first)
    return {
        "ingests": ingests,
        "readings": stored,
        "expected": expected,
        "lost": expected - stored,
        "seconds": round(span, 2),
        "readings_per_s": round(stored / span),
        "cpu_s": {k: round(v, 2) for k, v in spent.items()},
        "cpu_us_per_reading": cpu.per_reading_us(spent, stored),
    }


async def phase_naive(args: argparse.Namespace, mqtt_url: str) -> dict[str, Any]:
    """One autocommit INSERT per reading, acked by the client library as it arrives."""
    async with fresh_database(args.admin_url) as url:
        prefix = f"bench-{uuid.uuid4().hex[:6]}"
        topics = Topics(prefix)
        client_id = f"naive-{uuid.uuid4().hex[:6]}"
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (msg.topic, bytes(msg.payload)))

        def connect() -> paho.Client:
            c = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=paho.MQTTv311,
                clean_session=False,
            )
            c.on_message = on_message
            host, port = mqtt_url.removeprefix("mqtt://").split(":")
            c.connect(host, int(port))
            c.subscribe(topics.device_telemetry_filter(), 1)
            c.loop_start()
            return c

        c = connect()
        await asyncio.sleep(0.5)  # let the SUBACK register the persistent session
        c.disconnect()
        c.loop_stop()
        n_msgs = args.naive_messages
        publish(mqtt_url, prefix, n_msgs, 1e6, args.publishers)
        conn = await asyncpg.connect(url)
        await conn.execute("SELECT ensure_readings_partitions(current_date - 1, current_date + 1)")
        c = connect()
        inserted = 0
        start = None
        deadline = time.monotonic() + args.naive_seconds
        while time.monotonic() < deadline:
            try:
                topic, payload = await asyncio.wait_for(queue.get(), 5)
            except TimeoutError:
                break
            if start is None:
                start = time.monotonic()
            device = topics.parse_device_topic(topic, "telemetry") or ""
            received = datetime.now(UTC)
            for r in parse_telemetry(device, payload, received):
                await conn.execute(
                    "INSERT INTO readings (device_id, metric, ts, value, unit, received_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    r.device_id,
                    r.metric,
                    r.ts,
                    r.value,
                    r.unit,
                    received,
                )
                inserted += 1
        elapsed = time.monotonic() - (start or time.monotonic())
        c.disconnect()
        c.loop_stop()
        await conn.close()
    return {
        "readings": inserted,
        "seconds": round(elapsed, 2),
        "readings_per_s": round(inserted / elapsed),
    }


async def phase_limit(args: argparse.Namespace) -> dict[str, Any]:
    """COPY into staging + INSERT ON CONFLICT, batches of the ingest's size, from memory.

    Rows are generated batch by batch (the same fleet, the same shape as the drain phase);
    only the database work is timed.
    """
    async with fresh_database(args.admin_url) as url:
        import random

        ids = [f"bench-{i:04d}" for i in range(DEVICES)]
        fleet = Fleet(ids, METRICS, random.Random(1))
        start = datetime.now(UTC) - timedelta(minutes=30)
        total = args.limit_readings or args.messages * METRICS
        conn = await asyncpg.connect(url)
        await conn.execute(
            "CREATE TEMP TABLE staging (device_id text, metric text, ts timestamptz, "
            "value double precision, unit text, received_at timestamptz) ON COMMIT DELETE ROWS"
        )
        await conn.execute("SELECT ensure_readings_partitions(current_date - 1, current_date + 1)")
        db_seconds = 0.0
        written = 0
        i = 0
        while written < total:
            rows: list[tuple[Any, ...]] = []
            while len(rows) < args.batch_readings and written + len(rows) < total:
                device = ids[i % DEVICES]
                ts = start + timedelta(microseconds=i * 100)
                for r in parse_telemetry(device, fleet.message(device, ts), ts):
                    rows.append((r.device_id, r.metric, r.ts, r.value, r.unit, ts))
                i += 1
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table("staging", records=rows, columns=READING_COLUMNS)
                await conn.execute(
                    "INSERT INTO readings SELECT * FROM staging ON CONFLICT DO NOTHING"
                )
            db_seconds += time.perf_counter() - t0
            written += len(rows)
        stored = int(await conn.fetchval("SELECT count(*) FROM readings"))
        await conn.close()
    return {
        "readings": stored,
        "seconds": round(db_seconds, 2),
        "readings_per_s": round(stored / db_seconds),
    }


async def phase_live(args: argparse.Namespace, mqtt_url: str, tmp: Path) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    stats = tmp / "live-stats.json"
    async with fresh_database(args.admin_url) as url:
        env = ingest_env(url, mqtt_url, prefix, ingest_stats_file=stats)
        log = tmp / "live.log"
        with ingest_processes(env, log):
            wait_log(log, "ingest subscribed")
            messages = int(args.live_rate * args.live_seconds)
            print(f"live: {args.live_rate:,} msg/s for {args.live_seconds}s ...", flush=True)
            t0 = time.monotonic()
            pub = publish(mqtt_url, prefix, messages, args.live_rate, args.publishers)
            expected = pub["messages_acked"] * METRICS
            stored = await wait_rows(url, expected, within=180)
            caught_up_s = time.monotonic() - t0
    summary = json.loads(stats.read_text())  # written by the ingest as it stopped
    return {
        "rate_msgs_per_s": args.live_rate,
        "achieved_msgs_per_s": pub["messages_per_s"],
        "readings": stored,
        "lost": expected - stored,
        "seconds_until_all_stored": round(caught_up_s, 1),
        "readings_per_s": round(stored / caught_up_s),
        "latency_p50_ms": summary["latency_p50_ms"],
        "latency_p99_ms": summary["latency_p99_ms"],
    }


async def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--admin-url", default=DEFAULT_ADMIN)
    p.add_argument("--messages", type=int, default=1_000_000, help="drain backlog (x5 readings)")
    p.add_argument("--publishers", type=int, default=3)
    p.add_argument("--naive-messages", type=int, default=30_000)
    p.add_argument("--naive-seconds", type=float, default=30)
    p.add_argument("--limit-readings", type=int, default=0, help="default: as many as drain")
    p.add_argument(
        "--batch-readings", type=int, default=25_000, help="the ingest's 5,000 messages x 5"
    )
    p.add_argument("--live-rate", type=float, default=2000, help="messages/s in the live phase")
    p.add_argument("--live-seconds", type=float, default=60)
    p.add_argument("--mapped-messages", type=int, default=50_000, help="per format (x5 readings)")
    p.add_argument(
        "--phases",
        default="drain,limit-bare,limit-own,naive,live",
        help="also drainN: the drain with N ingest processes on the shared subscription; "
        "limit: the old from-memory limit (rows built inside the loop, bare schema's readings)",
    )
    args = p.parse_args()

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmpdir, mosquitto(Path(tmpdir) / "mosquitto") as broker:
        tmp, mqtt_url = Path(tmpdir), broker.url
        assert broker.proc is not None
        broker_pid = broker.proc.pid
        prepared: list[list[Any]] | None = None
        for phase in args.phases.split(","):
            t0 = time.monotonic()
            if phase == "drain":
                results[phase] = await phase_drain(args, mqtt_url, broker_pid, tmp)
            elif phase.startswith("drain"):  # drain2: the same with two shared ingests
                n = int(phase[5:])
                results[phase] = await phase_drain(args, mqtt_url, broker_pid, tmp, n)
            elif phase == "naive":
                results[phase] = await phase_naive(args, mqtt_url)
            elif phase == "limit":
                results[phase] = await phase_limit(args)
            elif phase.startswith("limit-"):
                if prepared is None:  # built once, before any clock starts
                    total = args.limit_readings or args.messages * METRICS
                    prepared = limits.batches(DEVICES, METRICS, total, args.batch_readings)
                if phase == "limit-bare":
                    results[phase] = await limits.limit_bare(args.admin_url, prepared)
                elif phase == "limit-own":
                    results[phase] = await limits.limit_own(args.admin_url, prepared, 1)
                    results["limit-own2"] = await limits.limit_own(args.admin_url, prepared, 2)
            elif phase == "mapped":
                results[phase] = await phase_mapped(args.admin_url, mqtt_url, args.mapped_messages)
            elif phase == "live":
                results[phase] = await phase_live(args, mqtt_url, tmp)
            print(f"{phase}: {results[phase]} ({time.monotonic() - t0:.0f}s)", flush=True)
    if {"drain", "naive", "limit"} <= results.keys():
        d = results["drain"]["readings_per_s"]
        results["ratios"] = {
            "ingest_over_naive": round(d / results["naive"]["readings_per_s"], 1),
            "ingest_over_limit": round(d / results["limit"]["readings_per_s"], 2),
        }
    if "drain" in results:
        d = results["drain"]["readings_per_s"]
        for limit in ("limit-bare", "limit-own", "limit-own2"):
            if limit in results:
                results.setdefault("ratios", {})[f"drain_over_{limit}"] = round(
                    d / results[limit]["readings_per_s"], 2
                )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
