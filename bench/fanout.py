"""Live fan-out: the bridge's WebSocket clients against MQTT-over-WebSocket clients of the same
mosquitto, side by side in one run.

    .venv/bin/python -m bench.fanout [--clients 100 1000] [--devices 1000] [--share 10]
                                     [--rate 1] [--duration 20] [--workers 2]
                                     [--front-processes 1]

What is compared: a publisher puts validated-stream messages (``telemetry/{device}/v``, the
shape the ingest publishes after commit) on mosquitto at a fixed total rate (devices x rate).
(a) N bridge clients each subscribe on the front to ``share`` devices; (b) N MQTT-over-WebSocket
clients each subscribe at mosquitto's websocket listener to the same devices' topics. Both
receive exactly the same messages from the same broker, so the difference is the front's
fan-out (auth, filters, translation, per-client queues) against mosquitto's own (C, single
thread). Storage is not in this path; end to end (device -> stored -> dashboard) is
``bench.soak`` and the ingest benchmarks.

Load generator: ``workers`` processes, each holding N/workers asyncio connections built on the
same ``websockets`` library for both kinds; the MQTT client is a minimal hand-framed one
(CONNECT, SUBSCRIBE, parse PUBLISH). Each message carries its send time (``time.time()``) as
the value, so latency = receive time - send time on one clock. The workers' CPU time is
reported next to the results: a worker near 100% of a core means the generator, not the
server, limits the number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from bench.services import _get_json, front_process, mosquitto
from bridge.embedded import free_port
from ingest.mqtt import set_nodelay

RESULTS = Path(__file__).parent / "results"


# -- minimal MQTT over WebSocket ------------------------------------------------------------
# The load generator frames its few packets itself (MQTT 3.1.1), so it measures the same
# thing whatever the project's own MQTT client becomes.
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, keepalive: int = 300) -> bytes:
    """CONNECT, clean session, no credentials (the bench broker's websocket listener)."""
    body = _string(b"MQTT") + bytes([4, 0x02]) + keepalive.to_bytes(2, "big")
    body += _string(client_id.encode())
    return b"\x10" + _varint(len(body)) + body


def parse_packets(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Split complete packets off the front of ``buffer``: [(packet type, body)]."""
    packets: list[tuple[int, bytes]] = []
    while len(buffer) >= 2:
        length, shift, pos = 0, 0, 1
        while True:
            if pos >= len(buffer):
                return packets  # remaining length not complete yet
            byte = buffer[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ValueError("malformed remaining length")
        if len(buffer) < pos + length:
            return packets
        packets.append((buffer[0] >> 4, bytes(buffer[pos : pos + length])))
        del buffer[: pos + length]
    return packets


def subscribe_packet(filters: list[str], packet_id: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"".join(_string(f.encode()) + b"\x00" for f in filters)
    return b"\x82" + _varint(len(body)) + body


def publish_payload(packet: bytes) -> bytes:
    """The application payload of a QoS 0 PUBLISH body (topic length, topic, payload)."""
    topic_len = int.from_bytes(packet[:2], "big")
    return packet[2 + topic_len :]


# -- one worker process -----------------------------------------------------------------------
async def _bridge_client(url: str, token: str, devices: list[str], out: dict[str, Any]) -> None:
    async with connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        max_queue=None,
        open_timeout=120,
    ) as ws:
        await ws.recv()
        await ws.send(
            orjson.dumps(
                {"type": "subscribe", "channel": "telemetry", "device_id": devices}
            ).decode()
        )
        out["ready"] += 1
        async for frame in ws:
            now = time.time()
            msg = orjson.loads(frame)
            if msg.get("type") == "telemetry_update":
                out["n"] += 1
                if out["recording"]:
                    out["lat"].append(now - msg["telemetry"]["v"]["value"])


async def _mqtt_client(url: str, devices: list[str], out: dict[str, Any]) -> None:
    async with connect(
        url,
        subprotocols=[Subprotocol("mqtt")],
        compression=None,
        max_queue=None,
        open_timeout=120,
    ) as ws:
        await ws.send(connect_packet(f"fo-{uuid.uuid4().hex[:10]}"))
        await ws.send(subscribe_packet([f"telemetry/{d}/+" for d in devices]))
        buffer = bytearray()
        subscribed = False
        async for frame in ws:
            now = time.time()
            buffer += frame if isinstance(frame, bytes) else frame.encode()
            for kind, body in parse_packets(buffer):
                if kind == 9 and not subscribed:  # SUBACK
                    subscribed = True
                    out["ready"] += 1
                elif kind == 3:  # PUBLISH (QoS 0: no packet id)
                    out["n"] += 1
                    if out["recording"]:
                        out["lat"].append(now - orjson.loads(publish_payload(body))["value"])


def worker(kind: str, url: str, token: str, shares: list[list[str]], conn: Any) -> None:
    out: dict[str, Any] = {"n": 0, "ready": 0, "lat": [], "recording": False}

    async def main() -> None:
        tasks = []
        for i, devices in enumerate(shares):
            coro = (
                _bridge_client(url, token, devices, out)
                if kind == "bridge"
                else _mqtt_client(url, devices, out)
            )
            tasks.append(asyncio.create_task(coro))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # a gentle ramp, like real dashboards
        while out["ready"] < len(shares):
            if any(t.done() for t in tasks):
                done = next(t for t in tasks if t.done())
                raise RuntimeError(f"a client failed: {done.exception()!r}")
            await asyncio.sleep(0.1)
        conn.send("ready")
        await asyncio.to_thread(conn.recv)  # "go": the measured window starts
        # The generator's own garbage collections (a full one over 500 connections' objects
        # takes 50-70 ms) showed up as latency spikes of whichever side was being measured,
        # more often on the bridge side, whose frames parse into more objects. Both kinds get
        # the same treatment: no collections inside the measured window.
        gc.collect()
        gc.freeze()
        gc.disable()
        out["n"], out["recording"] = 0, True
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.to_thread(conn.recv)  # "stop"
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        gc.enable()
        lat = out["lat"]
        conn.send(
            {
                "n": out["n"],
                "lat": lat if len(lat) <= 200_000 else lat[:: len(lat) // 200_000 + 1],
                "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
            }
        )
        for t in tasks:
            t.cancel()

    asyncio.run(main())


# -- orchestration ------------------------------------------------------------------------------
class Publisher(threading.Thread):
    """validated-stream messages at a fixed total rate, QoS 0, from its own thread."""

    def __init__(self, port: int, devices: list[str], rate: float) -> None:
        super().__init__(daemon=True)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4()}")
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        set_nodelay(self.client)
        self.devices, self.rate = devices, rate
        self.stop_event = threading.Event()
        self.sent = 0

    def run(self) -> None:
        self.client.loop_start()
        topics = [f"telemetry/{d}/v" for d in self.devices]
        per_tick = max(1, len(self.devices) // 100)  # spread over 100 ticks per period
        period = 1.0 / self.rate / (len(self.devices) / per_tick)
        tick, i = time.monotonic(), 0
        while not self.stop_event.is_set():
            for _ in range(per_tick):
                d = i % len(self.devices)
                body = orjson.dumps(
                    {
                        "device_id": self.devices[d],
                        "metric": "v",
                        "value": time.time(),
                        "unit": None,
                        "ts": "2026-01-01T00:00:00.000Z",
                        "received_at": "2026-01-01T00:00:00.000000Z",
                    }
                )
                self.client.publish(topics[d], body, qos=0)
                i += 1
            self.sent = i
            tick += period
            time.sleep(max(0.0, tick - time.monotonic()))
        self.client.loop_stop()


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its children (``serve --processes N`` is a supervisor)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return total + sum(cpu_seconds(int(c)) for c in children)


def _settle(env: dict[str, Any], timeout_s: float = 120.0) -> None:
    """Until the front has let its clients go: no connection, no broker subscription, and
    under a tenth of a core busy. A front still working off a backlog (or still subscribed,
    so the broker keeps sending it the stream) took CPU from the mosquitto case that follows."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        metrics = _get_json(env["front_metrics_url"], timeout=5)
        cpu0 = cpu_seconds(env["front_pid"])
        time.sleep(0.5)
        busy = (cpu_seconds(env["front_pid"]) - cpu0) / 0.5
        idle = not metrics["connections"]["current"] and not metrics["broker"]["subscriptions"]
        if idle and busy < 0.1:
            return
    print("warning: the front was still busy when the next case started", flush=True)


def run_case(kind: str, n: int, args: argparse.Namespace, env: dict[str, Any]) -> dict[str, Any]:
    devices = env["devices"]
    shares = [
        [devices[(k * args.share + j) % len(devices)] for j in range(args.share)] for k in range(n)
    ]
    url = env["bridge_url"] if kind == "bridge" else env["mqtt_ws_url"]
    ctx = mp.get_context("spawn")
    procs, pipes = [], []
    for w in range(args.workers):
        parent, child = ctx.Pipe()
        p = ctx.Process(
            target=worker, args=(kind, url, env["token"], shares[w :: args.workers], child)
        )
        p.start()
        procs.append(p)
        pipes.append(parent)
    for pipe in pipes:
        if not pipe.poll(300):
            raise RuntimeError(f"{kind} clients did not connect in time")
        pipe.recv()
    server_pid = env["front_pid"] if kind == "bridge" else env["mosquitto_pid"]
    publisher = Publisher(env["mqtt_port"], devices, args.rate)
    publisher.start()
    time.sleep(2)  # warm-up
    for pipe in pipes:
        pipe.send("go")
    sent0, cpu0, t0 = publisher.sent, cpu_seconds(server_pid), time.monotonic()
    time.sleep(args.duration)
    for pipe in pipes:
        pipe.send("stop")
    elapsed = time.monotonic() - t0
    sent, cpu1 = publisher.sent - sent0, cpu_seconds(server_pid)
    results = [pipe.recv() for pipe in pipes]
    publisher.stop_event.set()
    publisher.join()
    for p in procs:
        p.terminate()
        p.join()
    if kind == "bridge":
        _settle(env)
    lat = sorted(x * 1000 for r in results for x in r["lat"])
    delivered = sum(r["n"] for r in results)
    expected = sent * n * args.share / len(devices)
    return {
        "kind": kind,
        "clients": n,
        "delivered_per_s": round(delivered / elapsed),
        "expected_per_s": round(expected / elapsed),
        "nominal_per_s": round(args.rate * n * args.share),
        "delivered_ratio": round(delivered / expected, 4) if expected else None,
        "p50_ms": round(statistics.median(lat), 2) if lat else None,
        "p99_ms": round(lat[int(len(lat) * 0.99)], 2) if lat else None,
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed),
        "worker_cpu_pct": [round(100 * r["cpu_s"] / elapsed) for r in results],
    }


@contextlib.contextmanager
def services(tmp: Path, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """A private mosquitto with a websocket listener too, and the front (``--processes``)."""
    ws_port = free_port()
    listener = f"\nlistener {ws_port} 127.0.0.1\nprotocol websockets\nmax_connections -1\n"
    with (
        mosquitto(tmp / "mosquitto", extra_conf=listener, persistence=False) as broker,
        front_process(
            broker.url,
            None,
            tmp,
            processes=args.front_processes,
            ws_new_connections_per_ip_per_min=1_000_000,
            ws_max_connections_per_sub=1_000_000,
            ws_compression="false",
            log_level="WARNING",
        ) as front,
    ):
        if args.front_processes > 1:
            time.sleep(2)  # one child answered /health; let the others bind the port too
        yield {
            "devices": [f"fo-{i:05d}" for i in range(args.devices)],
            "bridge_url": f"{front.url}/ws",
            "front_metrics_url": f"{front.url.replace('ws://', 'http://', 1)}/metrics",
            "mqtt_ws_url": f"ws://127.0.0.1:{ws_port}/",
            "mqtt_port": broker.port,
            "token": front.token(scope="telemetry:read", sub="bench", ttl_s=86400),
            "front_pid": front.pid,
            "mosquitto_pid": broker.pid,
        }


GENERATOR_BUSY_PCT = 80  # a worker this busy may be slower than the server it measures


def _num(value: float | None) -> str:
    return "-" if value is None else str(value)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--share", type=int, default=10, help="devices per client")
    ap.add_argument("--rate", type=float, default=1.0, help="messages/s per device")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=2, help="client processes")
    ap.add_argument(
        "--front-processes", type=int, default=1, help="serve --processes N (SO_REUSEPORT)"
    )
    args = ap.parse_args()
    command = " ".join([".venv/bin/python -m bench.fanout", *sys.argv[1:]])
    print(f"$ {command}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="fanout-"))
    rows = []
    with services(tmp, args) as env:
        for n in args.clients:
            for kind in ("bridge", "mqtt-ws"):
                row = run_case(kind, n, args, env)
                rows.append(row)
                print(row, flush=True)
    print(
        f"\n{'clients':>7} {'kind':<8} {'msg/s':>8} {'expected':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'server cpu':>10}  workers cpu"
    )
    for r in rows:
        print(
            f"{r['clients']:>7} {r['kind']:<8} {r['delivered_per_s']:>8} {r['expected_per_s']:>8} "
            f"{_num(r['p50_ms']):>8} {_num(r['p99_ms']):>8} {r['server_cpu_pct']:>9}%  "
            f"{r['worker_cpu_pct']}"
        )
    for n in args.clients:
        b = next(r for r in rows if r["clients"] == n and r["kind"] == "bridge")
        m = next(r for r in rows if r["clients"] == n and r["kind"] == "mqtt-ws")
        print(
            f"N={n}: bridge/broker delivered/s "
            f"{_ratio(b['delivered_per_s'], m['delivered_per_s'])}, "
            f"p50 {_ratio(b['p50_ms'], m['p50_ms'])}, p99 {_ratio(b['p99_ms'], m['p99_ms'])}"
        )
    for r in rows:
        # The generator must not be what limits a case: a worker near a full core, or a
        # publisher short of its rate, means the numbers say little about the server.
        busy = max(r["worker_cpu_pct"], default=0)
        if busy >= GENERATOR_BUSY_PCT or r["expected_per_s"] < 0.95 * r["nominal_per_s"]:
            print(
                f"warning: N={r['clients']} {r['kind']}: the load generator may be the limit "
                f"(busiest worker {busy}% of a core, publisher at "
                f"{r['expected_per_s'] / max(1, r['nominal_per_s']):.0%} of its rate): "
                "add --workers or lower --rate"
            )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"fanout-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"command": command, "args": vars(args), "rows": rows}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
