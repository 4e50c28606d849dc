"""A realistic device fleet: N devices, several metrics per message, QoS 1, PUBACKs awaited.

Each worker process owns a slice of the fleet and one MQTT connection (a gateway), paces its
messages evenly to the requested rate, and counts PUBACKs. One Python publisher manages only a
few thousand QoS 1 messages/s, so ``--processes`` spreads big fleets over several.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import random
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ingest.mqtt import MqttEndpoint, set_nodelay
from ingest.topics import Topics
from ingest.wire import iso_ms

# (name, unit, typical value, random-walk step, lower bound, upper bound)
METRICS: tuple[tuple[str, str, float, float, float, float], ...] = (
    ("temperature", "°C", 21.0, 0.2, -40.0, 85.0),
    ("humidity", "%", 45.0, 0.5, 0.0, 100.0),
    ("pressure", "hPa", 1013.0, 0.3, 870.0, 1085.0),
    ("battery", "%", 95.0, 0.05, 0.0, 100.0),
    ("rssi", "dBm", -67.0, 1.0, -120.0, -30.0),
    ("voltage", "V", 230.0, 0.5, 180.0, 260.0),
    ("current", "A", 4.0, 0.1, 0.0, 32.0),
    ("co2", "ppm", 600.0, 5.0, 350.0, 5000.0),
    ("vibration", "mm/s", 1.2, 0.1, 0.0, 50.0),
    ("flow", "L/min", 12.0, 0.3, 0.0, 200.0),
)
MAX_METRICS = len(METRICS)


@dataclass(frozen=True)
class SimulateConfig:
    mqtt_url: str
    devices: int = 10
    rate: float = 1.0  # messages per second per device
    metrics: int = 5
    duration_s: float | None = None
    count: int | None = None  # total messages across the fleet
    processes: int = 1
    qos: int = 1
    id_prefix: str = "sim"
    topic_prefix: str = ""
    seed: int | None = None
    max_unacked: int = 20_000

    def device_ids(self) -> list[str]:
        width = max(4, len(str(self.devices)))
        return [f"{self.id_prefix}-{i:0{width}d}" for i in range(self.devices)]


class Fleet:
    """Random-walk readings for a set of devices (pure: no I/O)."""

    def __init__(self, device_ids: list[str], metrics: int, rng: random.Random) -> None:
        self.rng = rng
        self.metrics = METRICS[:metrics]
        self.state = {
            d: [m[2] + rng.uniform(-m[3], m[3]) * 10 for m in self.metrics] for d in device_ids
        }
        self._last_ms: dict[str, int] = {}

    def stamp(self, device_id: str, now: datetime) -> datetime:
        """``now`` to the millisecond, later than this device's previous reading: a worker
        that stalled (a GC pause, a busy core) catches up in a burst, and two messages of one
        device in the same millisecond would carry one timestamp, the second stored as a
        duplicate of the first (it was, 7% of a 100-message run)."""
        ms = max(int(now.timestamp() * 1000), self._last_ms.get(device_id, -1) + 1)
        self._last_ms[device_id] = ms
        return datetime.fromtimestamp(ms / 1000, UTC)

    def message(self, device_id: str, now: datetime) -> bytes:
        now = self.stamp(device_id, now)
        values = self.state[device_id]
        out: dict[str, Any] = {}
        for i, (name, unit, _typ, step, low, high) in enumerate(self.metrics):
            values[i] = min(high, max(low, values[i] + self.rng.gauss(0, step)))
            out[name] = {"value": round(values[i], 3), "unit": unit}
        return orjson.dumps({"ts": iso_ms(now), "values": out})


def _worker(cfg: SimulateConfig, device_ids: list[str], quota: int | None, counters: Any) -> None:
    """Publish for ``device_ids`` until the quota, the duration or a stop; then await PUBACKs."""
    endpoint = MqttEndpoint.from_url(cfg.mqtt_url)
    topics = Topics(cfg.topic_prefix)
    rng = random.Random(None if cfg.seed is None else cfg.seed + hash(device_ids[0]) % 1000)
    fleet = Fleet(device_ids, cfg.metrics, rng)
    acked = 0
    ack_lock = threading.Lock()
    connected = threading.Event()

    def on_publish(_c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        nonlocal acked
        with ack_lock:
            acked += 1

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            connected.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=endpoint.paho_protocol)
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    client.on_publish = on_publish
    client.on_connect = on_connect
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(endpoint.host, endpoint.port, keepalive=30)
    set_nodelay(client)
    client.loop_start()
    if not connected.wait(10):
        raise SystemExit(f"simulate: could not connect to {endpoint.redacted()}")

    per_second = cfg.rate * len(device_ids)
    start = time.monotonic()
    end = start + cfg.duration_s if cfg.duration_s else math.inf
    sent = 0
    idx = 0
    try:
        while (quota is None or sent < quota) and time.monotonic() < end:
            # Pace to the schedule; never run more than max_unacked ahead of the broker.
            due = start + sent / per_second
            now_m = time.monotonic()
            if due > now_m:
                time.sleep(min(due - now_m, 0.05))
                continue
            if sent - acked > cfg.max_unacked:
                time.sleep(0.001)
                continue
            device = device_ids[idx]
            idx = (idx + 1) % len(device_ids)
            client.publish(
                topics.device_telemetry(device),
                fleet.message(device, datetime.now(UTC)),
                qos=cfg.qos,
            )
            sent += 1
            if sent % 200 == 0:
                counters[0] += 200
                counters[1] = acked if cfg.qos else sent
    except KeyboardInterrupt:
        pass
    finally:
        deadline = time.monotonic() + 30
        while cfg.qos and acked < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        counters[0] += sent % 200
        counters[1] = acked if cfg.qos else sent
        client.disconnect()
        client.loop_stop()


def run(cfg: SimulateConfig, out: Any = sys.stdout, progress: Any = sys.stderr) -> dict[str, Any]:
    """Run the fleet; print progress every 2 s and one summary line. Returns the summary."""
    if not 1 <= cfg.metrics <= MAX_METRICS:
        raise ValueError(f"--metrics must be between 1 and {MAX_METRICS}")
    if cfg.devices < 1 or cfg.rate <= 0 or cfg.processes < 1:
        raise ValueError("--devices, --rate and --processes must be positive")
    ids = cfg.device_ids()
    procs = min(cfg.processes, len(ids))
    slices = [ids[i::procs] for i in range(procs)]
    quotas: list[int | None] = [None] * procs
    if cfg.count is not None:
        quotas = [cfg.count // procs + (1 if i < cfg.count % procs else 0) for i in range(procs)]
    ctx = mp.get_context("fork")
    counters = [ctx.Array("q", 2, lock=False) for _ in range(procs)]  # [sent, acked]
    workers = [
        ctx.Process(target=_worker, args=(cfg, s, q, c), daemon=True)
        for s, q, c in zip(slices, quotas, counters, strict=True)
    ]
    started = time.monotonic()
    for w in workers:
        w.start()
    print(
        f"simulate: {cfg.devices} devices x {cfg.metrics} metrics, {cfg.rate:g} msg/s each "
        f"({cfg.devices * cfg.rate:g} msg/s), QoS {cfg.qos}, {procs} process(es) -> "
        f"{MqttEndpoint.from_url(cfg.mqtt_url).redacted()}",
        file=progress,
        flush=True,
    )
    last_report = started
    try:
        while any(w.is_alive() for w in workers):
            time.sleep(0.2)
            now = time.monotonic()
            if now - last_report >= 2:
                last_report = now
                sent = sum(c[0] for c in counters)
                acked = sum(c[1] for c in counters)
                print(
                    f"  {now - started:6.1f}s sent {sent:,} messages ({sent * cfg.metrics:,} "
                    f"readings), acked {acked:,}, {sent / (now - started):,.0f} msg/s",
                    file=progress,
                    flush=True,
                )
    except KeyboardInterrupt:
        for w in workers:
            w.join(35)
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    sent = sum(c[0] for c in counters)
    acked = sum(c[1] for c in counters)
    summary = {
        "devices": cfg.devices,
        "metrics": cfg.metrics,
        "messages_sent": sent,
        "messages_acked": acked,
        "readings_sent": sent * cfg.metrics,
        "seconds": round(elapsed, 2),
        "messages_per_s": round(sent / elapsed, 1) if elapsed else 0.0,
        "unacked": sent - acked,
    }
    print(
        f"simulate: sent {sent:,} messages ({sent * cfg.metrics:,} readings) from "
        f"{cfg.devices} devices in {elapsed:.1f}s ({summary['messages_per_s']:,} msg/s); "
        f"acked {acked:,}, unacked {sent - acked:,}",
        file=out,
        flush=True,
    )
    return summary
