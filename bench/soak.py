"""Soak test: many WebSocket clients and a device fleet for a long while; leaks and drift show.

    .venv/bin/python -m bench.soak [--clients 1000] [--devices 100] [--rate 1] [--duration 600]
                                   [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Not part of CI (it runs for ten minutes by default). It starts a private mosquitto, a fresh
database, and the ingest and the front as separate processes (as deployed), then:

- a fleet publishes one reading per device every 1/rate s at QoS 1 with ``ts`` = send time;
- each client subscribes to the telemetry of one device (client k -> device k % devices);
- every 10 s it samples the RSS of the ingest and the front and the delivery so far.

It reports delivered/expected per client (expected = readings the broker acknowledged for
the client's device), publish-to-receive latency p50/p99 per minute and RSS over time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from websockets.asyncio.client import connect

from bench.services import (
    DEFAULT_ADMIN,
    FrontProcess,
    bridge_env,
    fresh_database,
    front_process,
    ingest_processes,
    mosquitto,
)
from ingest.mqtt import MqttEndpoint, set_nodelay
from ingest.topics import Topics

TOPICS = Topics("")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Fleet(threading.Thread):
    """Publishes at a fixed rate from its own thread; counts PUBACKs per device.

    Only the publishes still waiting for their PUBACK are kept: each step counts and lets go
    of the acknowledged ones. Keeping every publish handle of the run (each with its own lock
    and condition) grew the soak's own full garbage collections past 100 ms, pausing this
    publisher and showing up as the front's tail latency.
    """

    def __init__(
        self, url: str, devices: int, rate: float, stop: threading.Event, burst: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.burst = burst
        ep = MqttEndpoint.from_url(url)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-{uuid.uuid4()}")
        self.client.max_inflight_messages_set(1000)
        self.client.connect(ep.host, ep.port)
        set_nodelay(self.client)
        self.devices, self.rate, self.stop = devices, rate, stop
        self.in_flight: deque[tuple[int, paho.MQTTMessageInfo]] = deque()
        self._acked: Counter[int] = Counter()

    def run(self) -> None:
        self.client.loop_start()
        # Field devices are not synchronised: each publishes on its own phase, so the fleet
        # is spread over the period in 100 steps. --burst sends every device at once instead
        # (the worst case: one second's readings arrive together).
        steps = 1 if self.burst else min(100, self.devices)
        period, tick = 1.0 / self.rate / steps, time.monotonic()
        d = step = 0
        while not self.stop.is_set():
            step += 1
            while d < step * self.devices // steps:
                # the send time of this message, not of the step
                body = orjson.dumps(
                    {"ts": int(time.time() * 1000), "values": {"v": float(d % 1000)}}
                )
                device = d % self.devices
                topic = TOPICS.device_telemetry(f"soak-{device:04d}")
                self.in_flight.append((device, self.client.publish(topic, body, qos=1)))
                d += 1
            self._count_acked()
            tick += period
            time.sleep(max(0.0, tick - time.monotonic()))

    def _count_acked(self) -> None:
        """Count and forget the oldest publishes that have their PUBACK (QoS 1 acknowledges
        in order; one still waiting holds the ones after it for a step or two)."""
        in_flight, acked = self.in_flight, self._acked
        while in_flight and in_flight[0][1].is_published():
            acked[in_flight.popleft()[0]] += 1

    def acked(self) -> Counter[int]:
        """PUBACKs per device; call once the thread has ended."""
        self._count_acked()
        late = Counter(d for d, info in self.in_flight if info.is_published())
        return self._acked + late


async def client(
    url: str, token: str, k: int, device: int, got: Counter[int], lat: list[float]
) -> None:
    async with connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        max_queue=None,
        open_timeout=60,
    ) as ws:
        await ws.recv()
        await ws.send(
            orjson.dumps(
                {"type": "subscribe", "channel": "telemetry", "device_id": f"soak-{device:04d}"}
            ).decode()
        )
        async for frame in ws:
            msg = orjson.loads(frame)
            if msg["type"] == "telemetry_update":
                got[k] += 1
                sent = datetime.fromisoformat(msg["telemetry"]["v"]["timestamp"]).timestamp()
                lat.append((time.time() - sent) * 1000)


def start(command: str, env: dict[str, str], tmp: Path) -> subprocess.Popen[bytes]:
    with open(tmp / f"{command}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", command], env=env, stdout=log, stderr=log
        )


def p99(values: list[float]) -> float | None:
    return round(statistics.quantiles(values, n=100)[98], 1) if len(values) > 100 else None


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--rate", type=float, default=1.0, help="readings/s per device")
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument(
        "--burst", action="store_true", help="all devices publish at the same instant each period"
    )
    ap.add_argument("--admin-url", default=DEFAULT_ADMIN)
    ap.add_argument(
        "--set", action="append", default=[], metavar="BRIDGE_X=Y",
        help="extra setting for the ingest and the front (repeatable)",
    )  # fmt: skip
    args = ap.parse_args()
    print(f"$ {' '.join([sys.executable, '-m', 'bench.soak', *sys.argv[1:]])}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    extra = (item.split("=", 1) for item in args.set)
    settings: dict[str, Any] = {
        "ws_new_connections_per_ip_per_min": 100_000,
        "ws_max_connections_per_sub": 100_000,
        "log_level": "WARNING",
        **{name.removeprefix("BRIDGE_").lower(): value for name, value in extra},
    }
    async with fresh_database(args.admin_url, prefix="soak") as db_url:
        with mosquitto(tmp / "mosquitto") as broker:
            env = bridge_env(database_url=db_url, mqtt_url=broker.url, **settings)
            with (
                ingest_processes(env, tmp / "ingest.log") as (ingest,),
                front_process(broker.url, db_url, tmp, **settings) as front,
            ):
                await soak(args, broker.url, front, ingest)


async def soak(
    args: argparse.Namespace, broker_url: str, front: FrontProcess, ingest: subprocess.Popen[bytes]
) -> None:
    stop = threading.Event()
    try:
        token = front.token(scope="telemetry:read", sub="soak", ttl_s=86400)
        got: Counter[int] = Counter()
        lat: list[float] = []
        started = time.monotonic()
        url = f"{front.url}/ws"
        tasks = [
            asyncio.create_task(client(url, token, k, k % args.devices, got, lat))
            for k in range(args.clients)
        ]
        await asyncio.sleep(min(30.0, 5 + args.clients / 100))  # let every client subscribe
        print(f"{args.clients} clients connected in {time.monotonic() - started:.1f}s", flush=True)
        # The clients' connections live for the whole run: out of the collector's sight, a
        # full collection does not walk them (it took 50-70 ms with 1,000 of them)
        gc.collect()
        gc.freeze()
        fleet = Fleet(broker_url, args.devices, args.rate, stop, burst=args.burst)
        fleet.start()
        samples = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.duration:
            await asyncio.sleep(10)
            window, lat[:] = lat[:], []
            sample = {
                "t_s": round(time.monotonic() - t0),
                "ingest_rss_mb": round(rss_mb(ingest.pid), 1),
                "front_rss_mb": round(rss_mb(front.pid), 1),
                "delivered": sum(got.values()),
                "p50_ms": round(statistics.median(window), 1) if window else None,
                "p99_ms": p99(window),
            }
            samples.append(sample)
            print(sample, flush=True)
            if any(t.done() for t in tasks):
                failed = next(t for t in tasks if t.done())
                raise RuntimeError(f"a client stopped: {failed.exception()!r}")
        stop.set()
        fleet.join()
        await asyncio.sleep(5)  # the last readings reach the clients
        acked = fleet.acked()
        expected = sum(acked[k % args.devices] for k in range(args.clients))
        delivered = sum(got.values())
        short = sum(1 for k in range(args.clients) if got[k] < acked[k % args.devices])
        print(
            f"\ndelivered/expected: {delivered}/{expected} = {delivered / max(1, expected):.4f}"
            f" ({short} of {args.clients} clients short)"
        )
        first, last = samples[0], samples[-1]
        print(
            f"front RSS {first['front_rss_mb']} -> {last['front_rss_mb']} MB, "
            f"ingest RSS {first['ingest_rss_mb']} -> {last['ingest_rss_mb']} MB"
        )
        p99s = [s["p99_ms"] for s in samples if s["p99_ms"] is not None]
        if p99s:
            print(
                f"p99 per 10 s window: first {p99s[0]} ms, median {statistics.median(p99s)} ms, "
                f"last {p99s[-1]} ms, max {max(p99s)} ms"
            )
        for t in tasks:
            t.cancel()
    finally:
        stop.set()


if __name__ == "__main__":
    asyncio.run(main())
