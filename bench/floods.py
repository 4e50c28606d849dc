"""Hostile clients: what one client that floods and never reads costs the front, against a
well-behaved client sending the same kind of messages at the allowed rate, in one run.

    .venv/bin/python -m bench.floods [--runs 3] [--seconds 5]
    .venv/bin/python -m bench.floods --old /tmp/old   # also attack the front of another checkout

Attacks (each from a raw socket with a 4 KiB receive buffer that never reads after the
handshake; ``bench/hostile.py``, the same client as ``tests/adversity``):

  ping_unauth   ``{"type":"ping"}`` messages back to back, no token
  ping_auth     the same, authenticated (Bearer header)
  ping_frames   WebSocket ping control frames back to back, authenticated
  query         ``query`` of 10,000 stored readings (limit 10,000), repeated
  since         ``subscribe`` with ``since`` (10,000 readings to replay), 750 times

Each attacker floods for ``--seconds`` (sends that block are retried until then), then holds
its socket open, still not reading, until the front lets go of it (at most ``--wait`` s).
Measured per attack, each against a fresh front (``python -m bridge serve``, default limits):

- peak RSS growth of the front: VmHWM (reset through /proc/<pid>/clear_refs once the
  clients are connected) minus VmRSS at the start, also sampled every 50 ms;
- seconds from the first byte of the flood until the front no longer holds the attacker's
  socket (its end gone from /proc/net/tcp or orphaned, inode 0): read from the kernel's
  table, so the attacker never has to read to find out;
- frames the front accepted: bytes the front's process read off its socket (sent, minus
  what waited in the attacker's send queue and the front's receive queue, from
  /proc/net/tcp, sampled every 20 ms), in frames; and frames the attacker handed the kernel;
  also the most the kernel held in the front's socket queues (send + receive): socket
  buffers are kernel memory, not in the front's RSS;
- a canary dashboard subscribed to one device: a message published every 20 ms on the
  validated stream (mosquitto -> front -> canary), delivery latency p50/p99 from the start
  of the flood until the socket was torn down (at least ``--seconds``); a delivery missing
  5 s after the last publish counts as lost.

Baselines, in the same run, each against a fresh front: a ``websockets`` client that sends
the same kind of messages at 90% of the front's allowed rate (messages: ws_messages_per_s;
ping frames: ws_frames_per_s) and reads everything; queries and since-subscribes (followed
by an unsubscribe) one at a time, each reply or replay read in full before the next.
ping_unauth and ping_auth share the ping baseline (an unauthenticated client may send 10
messages in all). Same canary, for ``--seconds``.

Where the processes run: the canary and the RSS sampler in this process's asyncio loop; the
attacker (a flood thread and a kernel-table watcher) and the baseline client each in a
process of their own (multiprocessing, spawn), so their work is not the canary's GIL. This
process's CPU share is reported next to the latencies. A private mosquitto per run; one fresh
PostgreSQL database for the whole bench (migrated, 10,000 readings), dropped at the end.

``--old DIR``: the five attacks also against ``python -m bridge serve`` run from DIR (a
checkout of an older commit: ``git worktree add /tmp/old <commit>``) with ``--old-seconds``
of flood and ``--old-wait``; a front past ``--guard-mb`` of RSS is killed (SIGKILL) and its
growth reported as at least that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.hostile import (
    RawClient,
    canary,
    cpu_seconds,
    frame,
    start_front,
    store_readings,
    stream_event,
)
from bench.services import DEFAULT_ADMIN, FrontProcess, fresh_database, mosquitto
from bridge.config import Settings
from ingest.mqtt import set_nodelay
from ingest.topics import Topics

RESULTS = Path(__file__).parent / "results"
DEVICE = "big-1"  # 10,000 stored readings: queried and replayed
READINGS = 10_000
SUBSCRIBES = 750  # as in the original report
CANARY = "canary-1"
CANARY_INTERVAL_S = 0.02
CANARY_GRACE_S = 5.0
POLITE_SHARE = 0.9  # of the allowed rate


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


LIMITS = {
    name: _default(name)
    for name in (
        "ws_messages_per_s",
        "ws_burst",
        "ws_frames_per_s",
        "ws_max_behind_s",
        "ws_auth_timeout_s",
        "ws_heartbeat_s",
        "ws_queue_max_bytes",
        "replay_max_messages",
    )
}


# -- what is sent -------------------------------------------------------------------------------
def query_message(id_: object = None) -> dict[str, Any]:
    msg = {"type": "query", "device_id": DEVICE, "metric": "t", "from": "-1h", "limit": READINGS}
    return msg if id_ is None else {**msg, "id": id_}


def since_subscribe(since: str, id_: object = None) -> dict[str, Any]:
    msg = {"type": "subscribe", "channel": "telemetry", "device_id": DEVICE, "since": since}
    return msg if id_ is None else {**msg, "id": id_}


# name: (what, authenticated, the frame, how many (None: for --seconds), baseline)
def attacks(since: str) -> dict[str, tuple[str, bool, bytes, int | None, str]]:
    return {
        "ping_unauth": (
            '{"type":"ping"} flood, unauthenticated',
            False,
            frame(b'{"type":"ping"}'),
            None,
            "ping",
        ),
        "ping_auth": (
            '{"type":"ping"} flood, authenticated',
            True,
            frame(b'{"type":"ping"}'),
            None,
            "ping",
        ),
        "ping_frames": (
            "ping control-frame flood",
            True,
            frame(b"ping", opcode=0x9),
            None,
            "ping_frames",
        ),
        "query": (
            "query limit 10,000, repeated",
            True,
            frame(orjson.dumps(query_message())),
            None,
            "query",
        ),
        "since": (
            f"subscribe with since x {SUBSCRIBES}",
            True,
            frame(orjson.dumps(since_subscribe(since))),
            SUBSCRIBES,
            "since",
        ),
    }


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- the attacker: its own process --------------------------------------------------------------
def attacker_main(
    port: int,
    token: str | None,
    data: bytes,
    seconds: float,
    count: int | None,
    wait_s: float,
    conn: Any,
) -> None:
    client = RawClient(port, token)
    conn.send("ready")
    conn.recv()  # go
    t0, cpu0 = time.monotonic(), _cpu_self()
    state: dict[str, Any] = {"read": 0, "torn": None, "kernel": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen = client.observe()
            if seen is None:
                state["torn"] = time.monotonic() - t0
                return
            state["read"] = max(state["read"], seen[0])
            # what the kernel holds for the front's end (not in its RSS)
            state["kernel"] = max(state["kernel"], seen[1].tx_queue + seen[1].rx_queue)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stalled = client.flood(data, seconds, count=count, persist=True)
    flood_s = time.monotonic() - t0
    deadline = t0 + seconds + wait_s
    stopped = False
    while watcher.is_alive() and time.monotonic() < deadline:
        if conn.poll(0.05):
            conn.recv()  # stop: the front was killed
            stopped = True
            break
    done.set()
    watcher.join()
    conn.send(
        {
            "sent_frames": client.sent,
            "accepted_frames": state["read"] // len(data),
            "server_socket_queues_kb": state["kernel"] // 1024,
            "stalled": stalled,
            "flood_s": round(flood_s, 2),
            "teardown_s": None if state["torn"] is None else round(state["torn"], 2),
            "stopped": stopped,
            "client_cpu_pct": round(100 * (_cpu_self() - cpu0) / (time.monotonic() - t0)),
        }
    )
    client.close()


# -- the well-behaved client: its own process ---------------------------------------------------
def polite_main(
    kind: str, url: str, token: str, rate: float, seconds: float, since: str, conn: Any
) -> None:
    asyncio.run(_polite(kind, url, token, rate, seconds, since, conn))


async def _polite(
    kind: str, url: str, token: str, rate: float, seconds: float, since: str, conn: Any
) -> None:
    from websockets.asyncio.client import connect

    stats: dict[str, Any] = {"sent": 0, "replies": 0, "frames": 0, "errors": 0}
    async with connect(
        url + "/ws", additional_headers={"Authorization": f"Bearer {token}"}, max_size=None
    ) as ws:
        await ws.recv()  # connected
        conn.send("ready")
        await asyncio.to_thread(conn.recv)  # go
        t0, cpu0 = time.monotonic(), _cpu_self()
        end = t0 + seconds
        tick = t0

        async def pace() -> bool:
            nonlocal tick
            tick = max(tick + 1 / rate, time.monotonic())
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            return time.monotonic() < end

        async def next_message() -> dict[str, Any]:
            msg: dict[str, Any] = orjson.loads(await ws.recv())
            stats["frames"] += 1
            if msg.get("type") == "error":
                stats["errors"] += 1
            return msg

        if kind == "ping":
            last = asyncio.Event()  # the reply to the last ping (replies come in order)

            async def reader() -> None:
                while True:
                    msg = await next_message()
                    if msg.get("type") == "pong":
                        stats["replies"] += 1
                        if msg.get("id") == "last":
                            last.set()

            task = asyncio.create_task(reader())
            while time.monotonic() < end:
                await ws.send(orjson.dumps({"type": "ping", "id": stats["sent"]}))
                stats["sent"] += 1
                await pace()
            await ws.send(b'{"type":"ping","id":"last"}')
            stats["sent"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(last.wait(), 5)
            task.cancel()
        elif kind == "ping_frames":
            waiters = []

            async def drain() -> None:
                async for _ in ws:
                    stats["frames"] += 1

            task = asyncio.create_task(drain())
            while time.monotonic() < end:
                waiters.append(await ws.ping())
                stats["sent"] += 1
                await pace()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*waiters)
            stats["replies"] = sum(1 for w in waiters if w.done() and not w.exception())
            task.cancel()
        elif kind == "query":
            while time.monotonic() < end:
                await ws.send(orjson.dumps(query_message(stats["sent"])))
                stats["sent"] += 1
                while (msg := await next_message()).get("id") != stats["sent"] - 1:
                    pass
                if msg["type"] == "query_result":
                    stats["replies"] += 1
                await pace()
        elif kind == "since":
            stats["replayed"] = 0
            while time.monotonic() < end:
                await ws.send(orjson.dumps(since_subscribe(since, stats["sent"])))
                stats["sent"] += 1
                while (msg := await next_message())["type"] != "replay_complete":
                    stats["replayed"] += msg["type"] == "telemetry_update"
                    if msg["type"] == "error":
                        break
                stats["replies"] += msg["type"] == "replay_complete"
                await pace()
                await ws.send(
                    orjson.dumps(
                        {"type": "unsubscribe", "channel": "telemetry", "device_id": DEVICE}
                    )
                )
                stats["sent"] += 1
                while (await next_message())["type"] not in ("unsubscribed", "error"):
                    pass
                await pace()
        else:
            raise ValueError(kind)
        stats["seconds"] = round(time.monotonic() - t0, 2)
        stats["sent_per_s"] = round(stats["sent"] / stats["seconds"], 1)
        stats["client_cpu_pct"] = round(100 * (_cpu_self() - cpu0) / stats["seconds"])
    conn.send(stats)


# -- one measurement ----------------------------------------------------------------------------
class Publisher:
    """Stream messages for the canary, QoS 0, through the run's mosquitto."""

    def __init__(self, mqtt_port: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4()}")
        self.client.connect("127.0.0.1", mqtt_port)
        set_nodelay(self.client)
        self.client.loop_start()

    def for_front(self, front: FrontProcess) -> Callable[[int], None]:
        topic = Topics(front.prefix).telemetry(CANARY, "t")

        def publish(i: int) -> None:
            self.client.publish(topic, stream_event(CANARY, i), qos=0)

        return publish

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def percentile_ms(values: list[float], q: float) -> float | None:
    """The q-quantile in ms (nearest rank); None when it falls on a lost delivery."""
    if not values:
        return None
    x = sorted(values)[min(len(values) - 1, int(len(values) * q))]
    return None if math.isinf(x) else round(x * 1000, 2)


async def measure(
    front: FrontProcess,
    publisher: Publisher,
    target: Callable[..., None],
    args: tuple[Any, ...],
    guard_mb: float,
) -> dict[str, Any]:
    """Canary subscribed, the actor process connected; then go: the actor runs while this
    samples the front's RSS and the canary publishes, until the actor reports."""
    stop, started, begin = asyncio.Event(), asyncio.Event(), asyncio.Event()
    can = asyncio.create_task(
        canary(
            front.url,
            front.token(),
            publisher.for_front(front),
            CANARY,
            CANARY_INTERVAL_S,
            stop=stop,
            started=started,
            begin=begin,
            grace_s=CANARY_GRACE_S,
        )
    )
    await asyncio.wait_for(started.wait(), 10)
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    if not await asyncio.to_thread(parent.poll, 30):
        raise RuntimeError("the client process did not connect")
    parent.recv()
    await asyncio.sleep(0.5)
    metrics0 = await asyncio.to_thread(_messages, front)
    hwm = front.reset_peak()
    base = peak = front.rss_mb()
    cpu0, self0 = cpu_seconds(front.pid), resource.getrusage(resource.RUSAGE_SELF)
    parent.send("go")
    begin.set()
    t0 = time.monotonic()
    killed_at: float | None = None
    while not parent.poll():
        if not proc.is_alive():
            raise RuntimeError("the client process died")
        if killed_at is None:
            rss = front.rss_mb()
            peak = max(peak, rss)
            if rss > guard_mb:
                front.proc.kill()
                front.proc.wait()
                killed_at = rss
                parent.send("stop")
        await asyncio.sleep(0.05)
    actor = parent.recv()
    window = time.monotonic() - t0
    metrics1 = await asyncio.to_thread(_messages, front) if killed_at is None else None
    if killed_at is None:
        if hwm:
            peak = max(peak, front.peak_rss_mb())
        front_cpu: float | None = round(100 * (cpu_seconds(front.pid) - cpu0) / window)
    else:
        front_cpu = None
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    self_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    stop.set()
    try:
        latencies = await asyncio.wait_for(can, CANARY_GRACE_S + 20)
    except Exception as exc:  # the canary's connection can fail with a killed or stuck front
        print(f"  canary failed: {exc!r}", flush=True)
        latencies = []
    proc.join(10)
    return {
        "rss_base_mb": round(base, 1),
        "rss_growth_mb": round(peak - base, 1),
        "killed_at_mb": None if killed_at is None else round(killed_at),
        "window_s": round(window, 2),
        "canary_n": len(latencies),
        "canary_lost": sum(1 for x in latencies if math.isinf(x)),
        "canary_p50_ms": percentile_ms(latencies, 0.5),
        "canary_p99_ms": percentile_ms(latencies, 0.99),
        "canary_max_ms": percentile_ms(latencies, 1.0),
        "canary_slow_n": sum(1 for x in latencies if x > 0.1),
        # (seconds after the start, ms) of the first 30 deliveries slower than 100 ms
        "canary_slow": [
            (round(k * CANARY_INTERVAL_S, 2), None if math.isinf(x) else round(x * 1000))
            for k, x in enumerate(latencies)
            if x > 0.1
        ][:30],
        "front_cpu_pct": front_cpu,
        # messages the front handled (all clients), its slow-consumer closes, in the window
        "messages_handled": _delta(metrics0, metrics1, "received"),
        "slow_consumer_closes": _delta(metrics0, metrics1, "closed_slow_consumer"),
        "bench_cpu_pct": round(100 * self_cpu / window),
        **actor,
    }


def _messages(front: FrontProcess) -> dict[str, int] | None:
    try:
        m: Any = front.metrics()
        return {
            "received": int(m["messages"]["received"]),
            "closed_slow_consumer": int(m["connections"].get("closed_slow_consumer", 0)),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _delta(a: dict[str, int] | None, b: dict[str, int] | None, key: str) -> int | None:
    return None if a is None or b is None else b[key] - a[key]


# -- a run --------------------------------------------------------------------------------------
async def one_case(
    label: str,
    code: str,
    mqtt_url: str,
    database_url: str,
    tmp: Path,
    publisher: Publisher,
    target: Callable[..., None],
    make_args: Callable[[FrontProcess], tuple[Any, ...]],
    guard_mb: float,
    settings: dict[str, str],
    code_dir: Path | None = None,
) -> dict[str, Any]:
    with start_front(mqtt_url, database_url, tmp, code_dir=code_dir, **settings) as front:
        row = await measure(front, publisher, target, make_args(front), guard_mb)
    row = {"case": label, "code": code, **row, "loadavg_1m_after": round(os.getloadavg()[0], 2)}
    print(
        f"  {code:<4} {label:<20} rss +{row['rss_growth_mb']:>7} MB"
        f"{' (killed)' if row['killed_at_mb'] else ''}"
        f"  teardown {row.get('teardown_s')} s  accepted {row.get('accepted_frames')}"
        f"  canary p50 {row['canary_p50_ms']} p99 {row['canary_p99_ms']} ms"
        f" lost {row['canary_lost']}/{row['canary_n']}  front cpu {row['front_cpu_pct']}%"
        f"  bench cpu {row['bench_cpu_pct']}%",
        flush=True,
    )
    return row


async def one_run(
    args: argparse.Namespace, run: int, database_url: str, since: str, tmp: Path
) -> list[dict[str, Any]]:
    """Every case against its own front, all on this run's private mosquitto."""
    with mosquitto(tmp / f"mosquitto-{run}") as broker:
        publisher = Publisher(broker.port)
        try:
            rows = await cases(args, broker.url, database_url, since, tmp, publisher)
        finally:
            publisher.close()
    for row in rows:
        row["run"] = run
    return rows


async def cases(
    args: argparse.Namespace,
    mqtt_url: str,
    database_url: str,
    since: str,
    tmp: Path,
    publisher: Publisher,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    rates = {
        "ping": POLITE_SHARE * LIMITS["ws_messages_per_s"],
        "ping_frames": POLITE_SHARE * LIMITS["ws_frames_per_s"],
        "query": POLITE_SHARE * LIMITS["ws_messages_per_s"],
        "since": POLITE_SHARE * LIMITS["ws_messages_per_s"],
    }
    for kind, rate in rates.items():
        if kind not in args.baselines:
            continue
        rows.append(
            await one_case(
                f"baseline:{kind}",
                "new",
                mqtt_url,
                database_url,
                tmp,
                publisher,
                polite_main,
                lambda f, k=kind, r=rate: (k, f.url, f.token(), r, args.seconds, since),
                args.guard_mb,
                args.settings,
            )
        )
    codes = [("new", None, args.seconds, args.wait)]
    if args.old:
        codes.append(("old", args.old, args.old_seconds, args.old_wait))
    for name, (_, auth, data, count, _) in attacks(since).items():
        if name not in args.attacks:
            continue
        for code, code_dir, seconds, wait in codes:
            rows.append(
                await one_case(
                    name,
                    code,
                    mqtt_url,
                    database_url,
                    tmp,
                    publisher,
                    attacker_main,
                    lambda f, a=auth, d=data, c=count, s=seconds, w=wait: (
                        f.port,
                        f.token() if a else None,
                        d,
                        s,
                        c,
                        w,
                    ),
                    args.guard_mb,
                    args.settings,
                    code_dir,
                )
            )
    return rows


# -- summary ------------------------------------------------------------------------------------
def _median(values: list[float | None], none_is: float) -> float | None:
    xs = [none_is if v is None else v for v in values]
    if not xs:
        return None
    m = statistics.median(xs)
    return None if math.isinf(m) else round(m, 2)


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    order = [*attacks(""), *(f"baseline:{k}" for k in ("ping", "ping_frames", "query", "since"))]
    keys = sorted({(r["code"], r["case"]) for r in rows}, key=lambda k: (order.index(k[1]), k))
    for code, case in keys:
        rs = [r for r in rows if r["code"] == code and r["case"] == case]
        s: dict[str, Any] = {"case": case, "code": code, "runs": len(rs)}
        s["rss_growth_mb"] = _median([r["rss_growth_mb"] for r in rs], math.inf)
        s["killed"] = sum(1 for r in rs if r["killed_at_mb"])
        s["canary_p50_ms"] = _median([r["canary_p50_ms"] for r in rs], math.inf)
        s["canary_p99_ms"] = _median([r["canary_p99_ms"] for r in rs], math.inf)
        s["canary_lost"] = [r["canary_lost"] for r in rs]
        s["canary_n"] = [r["canary_n"] for r in rs]
        s["front_cpu_pct"] = _median([r["front_cpu_pct"] for r in rs], math.inf)
        s["bench_cpu_pct"] = _median([r["bench_cpu_pct"] for r in rs], math.inf)
        s["client_cpu_pct"] = _median([r["client_cpu_pct"] for r in rs], math.inf)
        s["messages_handled"] = _median([r["messages_handled"] for r in rs], math.inf)
        s["slow_consumer_closes"] = [r["slow_consumer_closes"] for r in rs]
        s["loadavg_1m_after"] = [r["loadavg_1m_after"] for r in rs]
        if not case.startswith("baseline:"):
            s["teardown_s"] = _median([r["teardown_s"] for r in rs], math.inf)
            s["teardown_s_each"] = [r["teardown_s"] for r in rs]
            s["accepted_frames"] = _median([r["accepted_frames"] for r in rs], math.inf)
            s["sent_frames"] = _median([r["sent_frames"] for r in rs], math.inf)
            s["server_socket_queues_kb"] = _median(
                [r["server_socket_queues_kb"] for r in rs], math.inf
            )
            base_case = "baseline:" + attacks("")[case][4]
            base = [r for r in rows if r["case"] == base_case]
            if base:
                b99 = _median([r["canary_p99_ms"] for r in base], math.inf)
                b_rss = _median([r["rss_growth_mb"] for r in base], math.inf)
                s["baseline"] = base_case
                s["baseline_p50_ms"] = _median([r["canary_p50_ms"] for r in base], math.inf)
                s["baseline_p99_ms"] = b99
                s["baseline_rss_growth_mb"] = b_rss
                a99 = s["canary_p99_ms"]
                s["p99_ratio"] = round(a99 / b99, 2) if a99 is not None and b99 else None
        else:
            s["sent_per_s"] = _median([r["sent_per_s"] for r in rs], math.inf)
            s["replies"] = [r["replies"] for r in rs]
            s["errors"] = [r["errors"] for r in rs]
        out.append(s)
    return out


def print_table(summary: list[dict[str, Any]]) -> None:
    print(
        f"\n{'code':<4} {'case':<20} {'RSS+ MB':>8} {'teardown s':>10} {'accepted':>10} "
        f"{'sock KB':>7} "
        f"{'p50 ms':>8} {'p99 ms':>8} | {'base p50':>8} {'base p99':>8} {'base RSS+':>9} "
        f"{'p99 x':>6}"
    )
    for s in summary:
        print(
            f"{s['code']:<4} {s['case']:<20} {_fmt(s['rss_growth_mb']):>8}"
            f"{'*' if s['killed'] else ' '}"
            f"{_fmt(s.get('teardown_s', '')):>10} {_fmt(s.get('accepted_frames', '')):>10} "
            f"{_fmt(s.get('server_socket_queues_kb', '')):>7} "
            f"{_fmt(s['canary_p50_ms']):>8} {_fmt(s['canary_p99_ms']):>8} | "
            f"{_fmt(s.get('baseline_p50_ms', '')):>8} {_fmt(s.get('baseline_p99_ms', '')):>8} "
            f"{_fmt(s.get('baseline_rss_growth_mb', '')):>9} {_fmt(s.get('p99_ratio', '')):>6}"
        )
    print("(* killed past the RSS guard in at least one run; None: not torn down / lost)")


def _fmt(x: object) -> str:
    return "None" if x is None else str(x)


def machine() -> dict[str, Any]:
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "mosquitto": mosq.splitlines()[0] if mosq else None,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="flood / baseline duration")
    ap.add_argument(
        "--wait", type=float, default=60.0, help="after the flood, for the teardown (s)"
    )
    ap.add_argument("--attacks", nargs="+", default=list(attacks("")))
    ap.add_argument("--baselines", nargs="*", default=["ping", "ping_frames", "query", "since"])
    ap.add_argument("--old", type=Path, help="also attack the front of this checkout")
    ap.add_argument("--old-seconds", type=float, default=3.0)
    ap.add_argument("--old-wait", type=float, default=10.0)
    ap.add_argument("--guard-mb", type=float, default=4096.0, help="kill a front past this RSS")
    ap.add_argument("--admin-url", default=DEFAULT_ADMIN)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="a front setting for every front, e.g. ws_heartbeat_s=8 (default: defaults)",
    )
    args = ap.parse_args()
    args.settings = dict(kv.split("=", 1) for kv in args.set)
    command = " ".join([".venv/bin/python -m bench.floods", *sys.argv[1:]])
    print(f"$ {command}", flush=True)
    print(f"front limits (defaults): {LIMITS}; set: {args.settings}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="floods-"))
    rows: list[dict[str, Any]] = []
    started = datetime.now(UTC)
    async with fresh_database(args.admin_url, prefix="tb_bench_floods") as database_url:
        since = (await store_readings(database_url, DEVICE, READINGS)).isoformat()
        for run in range(1, args.runs + 1):
            print(f"run {run}/{args.runs}", flush=True)
            rows += await one_run(args, run, database_url, since, tmp)
    shutil.rmtree(tmp, ignore_errors=True)  # front logs, mosquitto data: kept after a failure
    summary = summarise(rows, args)
    print_table(summary)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"floods-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    doc = {
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "front_limits": LIMITS,
        "front_settings": args.settings,
        "summary": summary,
        "rows": rows,
    }
    out.write_text(json.dumps(doc, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    asyncio.run(main())
