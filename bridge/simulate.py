"""A realistic device fleet: N devices, several metrics per message, QoS 1, PUBACKs awaited.

Each worker process owns a slice of the fleet and one MQTT connection (a gateway), paces its
messages evenly to the requested rate, and counts what it sent and what the broker
acknowledged in counters shared with the parent, which shows the progress. One Python
publisher manages only a few thousand QoS 1 messages/s, so ``--processes`` spreads big fleets
over several.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bridge.simulate_report import Report, Totals
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


# The slots of a worker's shared counters. Each slot has one writer (the worker's loop, its
# network thread, or the parent for STOP), so plain stores without a lock are exact.
SENT, ACKED, ERRORS, CONNECTED, STOP = range(5)
LOST, UP, DONE = 0, 1, 2  # the states in slot CONNECTED
STOP_ACK_WAIT_S = 1.0  # Ctrl-C: how long the PUBACKs of sent messages are still awaited
END_ACK_WAIT_S = 30.0  # the end of a run: every PUBACK is awaited this long
MAX_CATCH_UP_S = 1.0  # after a stall, publish at most this much of the schedule at once


def _worker(cfg: SimulateConfig, device_ids: list[str], quota: int | None, counters: Any) -> None:
    """Publish for ``device_ids`` until the quota, the duration or a stop; then await PUBACKs.

    Every message counts in the shared counters at once (sent by this loop, acked by paho's
    network thread), so the parent's progress is true from the first second. Ctrl-C is the
    parent's business (it sets STOP): a worker that also took the SIGINT would wait out its
    PUBACKs on its own schedule."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()  # a worker whose parent is gone stops (it was killed, not asked)
    endpoint = MqttEndpoint.from_url(cfg.mqtt_url)
    topics = Topics(cfg.topic_prefix)
    rng = random.Random(None if cfg.seed is None else cfg.seed + hash(device_ids[0]) % 1000)
    fleet = Fleet(device_ids, cfg.metrics, rng)
    connected = threading.Event()

    def on_publish(_c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        counters[ACKED] += 1

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            counters[CONNECTED] = UP
            connected.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        if counters[CONNECTED] == UP:  # not our own disconnect at the end (DONE)
            counters[CONNECTED] = LOST

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=endpoint.paho_protocol)
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    client.on_publish = on_publish
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=30)
    except OSError as exc:
        print(f"simulate: cannot connect to {endpoint.redacted()}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    set_nodelay(client)
    client.loop_start()
    if not connected.wait(10):
        print(f"simulate: no answer from {endpoint.redacted()}", file=sys.stderr)
        raise SystemExit(1)

    interval = 1.0 / (cfg.rate * len(device_ids))
    start = time.monotonic()
    end = start + cfg.duration_s if cfg.duration_s else math.inf
    sent = 0
    idx = 0
    while (quota is None or sent < quota) and not counters[STOP]:
        # Each message at its own time on an even schedule: a steady stream, not a burst
        # each second. After a stall (a lost broker, a full window) the schedule restarts
        # from now rather than firing everything missed at once.
        now_m = time.monotonic()
        if now_m >= end:
            break
        due = start + sent * interval
        if due > now_m:
            time.sleep(min(due - now_m, 0.05))
            if os.getppid() != parent:
                break
            continue
        if now_m - due > MAX_CATCH_UP_S:
            start = now_m - sent * interval
        if cfg.qos and sent - counters[ACKED] > cfg.max_unacked:
            time.sleep(0.005)
            if os.getppid() != parent:
                break
            continue
        device = device_ids[idx]
        idx = (idx + 1) % len(device_ids)
        info = client.publish(
            topics.device_telemetry(device),
            fleet.message(device, datetime.now(UTC)),
            qos=cfg.qos,
        )
        # QoS 1 without a connection is queued by paho and sent after the reconnect
        if info.rc != paho.MQTT_ERR_SUCCESS and not (cfg.qos and info.rc == paho.MQTT_ERR_NO_CONN):
            counters[ERRORS] += 1
        sent += 1
        counters[SENT] = sent
    wait = STOP_ACK_WAIT_S if counters[STOP] else END_ACK_WAIT_S
    deadline = time.monotonic() + wait
    while cfg.qos and counters[ACKED] < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    counters[CONNECTED] = DONE
    client.disconnect()
    client.loop_stop()


def _totals(counters: list[Any]) -> Totals:
    return Totals(
        sent=sum(c[SENT] for c in counters),
        acked=sum(c[ACKED] for c in counters),
        errors=sum(c[ERRORS] for c in counters),
    )


class _BrokerWatch:
    """Says when a worker that was connected lost its broker, and when all are back."""

    def __init__(self, report: Report, where: str) -> None:
        self.report = report
        self.where = where
        self.was_up: set[int] = set()
        self.lost = False

    def check(self, counters: list[Any]) -> None:
        up = {i for i, c in enumerate(counters) if c[CONNECTED] == UP}
        down = {i for i in self.was_up if counters[i][CONNECTED] == LOST}
        if down and not self.lost:
            self.lost = True
            self.report.say(
                f"simulate: warning: lost the broker at {self.where}; reconnecting "
                "(QoS 1 messages wait for it)"
            )
        elif self.lost and not down:
            self.lost = False
            self.report.say(f"simulate: the broker at {self.where} is back")
        self.was_up |= up


def run(cfg: SimulateConfig, out: Any = sys.stdout, progress: Any = sys.stderr) -> dict[str, Any]:
    """Run the fleet with progress on ``progress`` and one summary line on ``out``; Ctrl-C
    stops it within about a second. Returns the summary."""
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
    counters = [ctx.Array("q", 5, lock=False) for _ in range(procs)]
    workers = [
        ctx.Process(target=_worker, args=(cfg, s, q, c), daemon=True)
        for s, q, c in zip(slices, quotas, counters, strict=True)
    ]
    where = MqttEndpoint.from_url(cfg.mqtt_url).redacted()
    started = time.monotonic()
    for w in workers:
        w.start()
    print(
        f"simulate: {cfg.devices} devices x {cfg.metrics} metrics, {cfg.rate:g} msg/s each "
        f"({cfg.devices * cfg.rate:g} msg/s), QoS {cfg.qos}, {procs} process(es) -> {where}",
        file=progress,
        flush=True,
    )
    report = Report(progress, cfg.metrics)
    watch = _BrokerWatch(report, where)
    interrupted = False
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, systemd, a test's terminate) stops like Ctrl-C: the default action
        # would end this process at once and leave its workers publishing on their own.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        while any(w.is_alive() for w in workers):
            time.sleep(0.1)
            watch.check(counters)
            report.update(time.monotonic() - started, _totals(counters))
    except KeyboardInterrupt:
        interrupted = True
        for c in counters:
            c[STOP] = 1
    finally:
        report.close()
    _join(workers, STOP_ACK_WAIT_S + 2 if interrupted else END_ACK_WAIT_S + 5)
    elapsed = time.monotonic() - started
    totals = _totals(counters)
    failed = sum(1 for w in workers if w.exitcode not in (0, None))
    summary = {
        "devices": cfg.devices,
        "metrics": cfg.metrics,
        "messages_sent": totals.sent,
        "messages_acked": totals.acked,
        "readings_sent": totals.sent * cfg.metrics,
        "errors": totals.errors,
        "seconds": round(elapsed, 2),
        "messages_per_s": round(totals.sent / elapsed, 1) if elapsed else 0.0,
        "unacked": totals.sent - totals.acked if cfg.qos else 0,
        "interrupted": interrupted,
        "failed_processes": failed,
    }
    print(
        f"simulate: {'stopped; ' if interrupted else ''}sent {totals.sent:,} messages "
        f"({totals.sent * cfg.metrics:,} readings) from {cfg.devices} devices in "
        f"{elapsed:.1f}s ({summary['messages_per_s']:,} msg/s); acked {totals.acked:,}, "
        f"unacked {summary['unacked']:,}, errors {totals.errors:,}",
        file=out,
        flush=True,
    )
    return summary


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _join(workers: list[Any], timeout: float) -> None:
    """Wait for the workers; one that does not finish in time is terminated (a second
    Ctrl-C while waiting does the same at once)."""
    deadline = time.monotonic() + timeout
    try:
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass
    for w in workers:
        if w.is_alive():
            w.terminate()
            w.join(5)
