"""What one client can make the front run and hold at once, and what many that never read hold
together: the numbers behind tests/adversity/test_front_concurrency.py and
test_front_budget.py, measured the same way (``bench/hostile.py``).

    .venv/bin/python -m bench.limits [--runs 3]
    .venv/bin/python -m bench.limits --old /tmp/old   # also the front of another checkout

Cases, each against a fresh front process (``python -m bridge serve``) on a private mosquitto
per run, with one fresh database for the whole bench (dropped at the end):

  pipeline  one client sends 200 heavy queries (150 alone, two batches of 25) and ten
            subscribes with ``since`` (2,000 stored readings each) at once, then reads;
            ws_messages_per_s and ws_burst 1,000 so that all of it is let in
  gap       one client with 20 resumable subscriptions; 3,000 readings per device stored
            behind the front's back, then a stream-resync (what the stream publisher sends
            after dropping messages): every subscription replays, and the client sends 20
            heavy queries meanwhile
  crowd     30 clients subscribe to every reading and never read; a stream of 1,000
            readings/s with names of the longest legal length; ws_queue_budget_bytes 1 MiB,
            ws_queue_max_bytes 2 MiB, ws_max_behind_s 3; until all 30 are torn down (40 s
            at most)

Measured:

- peak: the most of the attacker's statements running at once, sampled every 2 ms in
  pg_stat_activity (the front's pool is ``telemetry-bridge-front``; for ``--old`` fronts,
  whose pool has the name every bridge connection had, ``telemetry-bridge``: nothing else
  connects to the bench's database by that name);
- RSS growth: the front's VmHWM (reset through /proc/<pid>/clear_refs once the clients are
  connected) minus its VmRSS then;
- pipeline, gap: the seconds until the attacker had all its answers, how many of its
  replays completed, and a canary asking for a 100-point page one question after another:
  median and p99 latency, against its median over 10 questions before the attack;
- crowd: per never-reading client, the seconds from falling behind (the kernel's send queue
  to it stopped growing: full) to the front letting go of its socket, the front's count of
  4008 closes, and a canary dashboard subscribed to one device, a reading every 20 ms
  through the broker: readings missed, p50/p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.floods import machine
from bench.hostile import (
    FrontProcess,
    Pipeliner,
    QueryCanary,
    Teardown,
    canary,
    heavy_query,
    heavy_statement,
    never_reading_subscriber,
    opened,
    publish_stream,
    start_front,
    store_gap,
    store_readings,
    watch_teardowns,
    watching,
)
from bench.services import DEFAULT_ADMIN, fresh_database, mosquitto
from ingest.topics import Topics
from storage.pool import FRONT_APPLICATION_NAME
from tests.helpers import MqttPeer

RESULTS = Path(__file__).parent / "results"
CASES = ("pipeline", "gap", "crowd")
PIPELINING = {"ws_messages_per_s": "1000", "ws_burst": "1000"}
CROWD = {
    "ws_queue_budget_bytes": str(1 << 20),
    "ws_queue_max_bytes": str(2 << 20),
    "ws_queue_size": "100000",
    "ws_max_behind_s": "3",
}


def ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    return round(xs[min(len(xs) - 1, int(len(xs) * q))] * 1000, 1)


async def pipeline(front: FrontProcess, database_url: str, app: str) -> dict[str, Any]:
    since = {"type": "subscribe", "channel": "telemetry", "since": "2000-01-01T00:00:00Z"}
    frames: list[dict[str, Any]] = []
    for i in range(150):
        frames.append(heavy_query(f"q{i}"))
        if i in (50, 100):
            items = [heavy_query(f"b{i}-{j}") for j in range(25)]
            frames.append({"type": "batch", "id": f"b{i}", "messages": items})
        if i % 15 == 7:
            frames.append(since | {"device_id": f"rep-{i // 15}"})
    attacker = Pipeliner(front)
    return await _attack(front, database_url, app, attacker, frames, 200, 10)


async def gap(
    front: FrontProcess, database_url: str, app: str, peer: MqttPeer, tag: str
) -> dict[str, Any]:
    devices = [f"gap-{tag}-{k}" for k in range(20)]
    attacker = Pipeliner(front)
    attacker.send([{"type": "subscribe", "channel": "telemetry", "device_id": d} for d in devices])
    subscribed = await asyncio.to_thread(
        attacker.client.read_replies, lambda r: r.types["subscribed"] == len(devices), (), 10
    )
    assert subscribed.types["subscribed"] == len(devices), subscribed
    await store_gap(database_url, devices, 3000)

    def resync() -> None:
        peer.publish(Topics(front.prefix).stream_resync(), b"{}")

    frames = [heavy_query(f"q{i}") for i in range(20)]
    return await _attack(front, database_url, app, attacker, frames, 20, 20, before=resync)


async def _attack(
    front: FrontProcess,
    database_url: str,
    app: str,
    attacker: Pipeliner,
    frames: list[dict[str, Any]],
    queries: int,
    replays: int,
    before: Any = None,
) -> dict[str, Any]:
    async with opened(front) as ws, watching(database_url, heavy_statement, app) as watch:
        ask = QueryCanary(ws)
        baseline = await ask.baseline()
        base_rss = front.rss_mb()
        front.reset_peak()
        started = time.monotonic()
        if before is not None:
            before()
        attacker.send(frames)
        reading = attacker.read(queries, replays, timeout=30)
        latencies = await ask.until(reading)
        replies = await reading
        took = time.monotonic() - started
    attacker.client.close()
    return {
        "peak": watch.peak,
        "samples": dict(sorted(watch.counts.items())),
        "rss_growth_mb": round(front.peak_rss_mb() - base_rss, 1),
        "answered_s": round(took, 2),
        "query_results": replies.types["query_result"],
        "replays_completed": replies.types["replay_complete"],
        "errors": replies.types["error"],
        "canary_baseline_p50_ms": ms(baseline, 0.5),
        "canary_p50_ms": ms(latencies, 0.5),
        "canary_p99_ms": ms(latencies, 0.99),
        "canary_n": len(latencies),
    }


async def crowd(front: FrontProcess, peer: MqttPeer, mqtt_url: str) -> dict[str, Any]:
    clients = [await asyncio.to_thread(never_reading_subscriber, front) for _ in range(30)]
    topic = Topics(front.prefix).telemetry("canary-1", "t")

    def publish(i: int) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        peer.publish(topic, f'{{"device_id":"canary-1","metric":"t","value":{i},"ts":"{now}"}}')

    started, stop = asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(
        canary(front.url, front.token(), publish, "canary-1", 0.02, stop=stop, started=started)
    )
    await asyncio.wait_for(started.wait(), 10)
    base_rss = front.rss_mb()
    front.reset_peak()
    stream_stop, publisher = threading.Event(), MqttPeer(mqtt_url)
    stream = asyncio.create_task(
        asyncio.to_thread(publish_stream, publisher.client, front.prefix, 1000, stream_stop)
    )
    seen: dict[int, Teardown] = {}
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 40:
            if watch_teardowns(front.port, clients, seen):
                break
            await asyncio.sleep(0.05)  # polling the kernel's table: no event to wait for
        await asyncio.sleep(1.0)  # the canary's readings of the last moments
    finally:
        stream_stop.set()
        stop.set()
        published = await stream
        publisher.close()
        latencies = await watcher
        for c in clients:
            c.close()
    behind = [x for t in seen.values() if (x := t.after_behind) is not None]
    delivered = [x for x in latencies if not math.isinf(x)]
    return {
        "rss_growth_mb": round(front.peak_rss_mb() - base_rss, 1),
        "torn_down": len(behind),
        "teardown_after_behind_max_s": round(max(behind), 2) if behind else None,
        "teardown_after_behind_median_s": round(statistics.median(behind), 2) if behind else None,
        "closed_4008": front.metrics()["connections"]["closed_slow_consumer"],
        "stream_published": published,
        "canary_missed": len(latencies) - len(delivered),
        "canary_n": len(latencies),
        "canary_p50_ms": ms(delivered, 0.5),
        "canary_p99_ms": ms(delivered, 0.99),
    }


async def one_run(args: argparse.Namespace, run: int, database_url: str, tmp: Path) -> list[Any]:
    rows = []
    codes: list[tuple[str, Path | None, str]] = [("new", None, FRONT_APPLICATION_NAME)]
    if args.old is not None:
        codes.append(("old", args.old, "telemetry-bridge"))
    with mosquitto(tmp / f"mosquitto-{run}") as broker:
        peer = MqttPeer(broker.url)
        try:
            for code, code_dir, app in codes:
                for case in args.cases:
                    settings = CROWD if case == "crowd" else PIPELINING
                    db = None if case == "crowd" else database_url
                    with start_front(broker.url, db, tmp, code_dir=code_dir, **settings) as front:
                        if case == "pipeline":
                            row = await pipeline(front, database_url, app)
                        elif case == "gap":
                            row = await gap(front, database_url, app, peer, f"{run}{code}")
                        else:
                            row = await crowd(front, peer, broker.url)
                    row |= {"run": run, "code": code, "case": case}
                    row["loadavg_1m"] = os.getloadavg()[0]
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            peer.close()
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (code, case): the median of each number over the runs (lists where they differ
    in kind, e.g. the samples histogram, are left out)."""
    out = []
    for key in sorted(
        {(r["code"], r["case"]) for r in rows}, key=lambda k: (k[0], CASES.index(k[1]))
    ):
        rs = [r for r in rows if (r["code"], r["case"]) == key]
        s: dict[str, Any] = {"code": key[0], "case": key[1], "runs": len(rs)}
        for name, value in rs[0].items():
            if name in s or name in ("run", "samples") or isinstance(value, dict):
                continue
            values = [r[name] for r in rs if r.get(name) is not None]
            s[name] = statistics.median(values) if values else None
        s["peak_each"] = [r.get("peak") for r in rs]
        out.append(s)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--old", type=Path, help="also measure the front of this checkout")
    ap.add_argument("--admin-url", default=DEFAULT_ADMIN)
    args = ap.parse_args()
    command = " ".join([".venv/bin/python -m bench.limits", *sys.argv[1:]])
    print(f"$ {command}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="limits-") as tmp:
        async with fresh_database(args.admin_url, prefix="tb_bench_limits") as database_url:
            await store_readings(database_url, "big-1", 10_000)
            await store_readings(database_url, "small-1", 100)
            for k in range(10):
                await store_readings(database_url, f"rep-{k}", 2000)
            for run in range(1, args.runs + 1):
                print(f"run {run}/{args.runs}", flush=True)
                rows += await one_run(args, run, database_url, Path(tmp))
    summary = summarise(rows)
    for s in summary:
        print(json.dumps(s))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"limits-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    doc = {"command": command, "machine": machine(), "summary": summary, "rows": rows}
    out.write_text(json.dumps(doc, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
