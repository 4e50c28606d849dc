"""Scale-out on one machine: two ingest processes on the shared subscription, two front
processes on one port, a device fleet publishing, clients on both fronts; one ingest and one
front are killed with SIGKILL in the middle (and restarted, as systemd would). Every reading
the broker acknowledged is stored exactly once, and every client sees every reading of its
device exactly once (clients of the killed front reconnect and resume with bridge.client)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from bridge.auth import mint
from bridge.client import BridgeClient, TelemetryUpdate
from bridge.embedded import free_port
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, wait_until
from tests.procnet import children, established_on, sockets_of, sockets_on

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SECRET = "scaleout-secret-" + "o" * 40
DEVICES = 4
READINGS = 2400  # 600 per device, ~400/s
CLIENTS = 8


class Deployment:
    def __init__(self, broker: BrokerInfo, database_url: str, prefix: str, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        self.env.update(
            BRIDGE_DATABASE_URL=database_url,
            BRIDGE_MQTT_URL=broker.url,
            BRIDGE_MQTT_TOPIC_PREFIX=prefix,
            BRIDGE_JWT_SECRET=SECRET,
            BRIDGE_WS_PORT=str(self.port),
            BRIDGE_WS_NEW_CONNECTIONS_PER_IP_PER_MIN="10000",
            BRIDGE_STATE_DIR=str(tmp / "state"),
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, **env: str) -> None:
        with open(self.tmp / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "bridge", *args],
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start_ingest(self, name: str) -> None:
        self.start(name, "ingest", "--shared", "--client-id", f"so-{name}-{self.port}")

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def deployment(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> Iterator[Deployment]:
    dep = Deployment(broker, database_url, topic_prefix, tmp_path)
    try:
        yield dep
    finally:
        dep.stop()


class Fleet(threading.Thread):
    """QoS 1 readings from DEVICES devices; records which ones the broker acknowledged."""

    def __init__(self, url: str, topics: Topics) -> None:
        super().__init__(daemon=True)
        self.peer = MqttPeer(url)
        self.acked: set[int] = set()
        self.peer.client.on_publish = self._on_publish
        self.mids: dict[int, int] = {}
        self.topics = topics
        self.progress = 0
        self.base = datetime.now(UTC) - timedelta(minutes=5)
        self._lock = threading.Lock()

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._lock:
            if mid in self.mids:
                self.acked.add(self.mids.pop(mid))
            else:
                self.mids[mid] = -1  # the ack came before we recorded the mid

    def run(self) -> None:
        for i in range(READINGS):
            ts = (self.base + timedelta(milliseconds=i)).isoformat()
            topic = self.topics.device_telemetry(f"so-{i % DEVICES}")
            info = self.peer.client.publish(topic, orjson.dumps({"ts": ts, "v": i}), qos=1)
            with self._lock:
                if self.mids.pop(info.mid, None) == -1:
                    self.acked.add(i)
                else:
                    self.mids[info.mid] = i
            self.progress = i
            time.sleep(0.0025)


async def _consume(client: BridgeClient, device: str, seen: list[int]) -> None:
    async with client.subscribe("telemetry", device_id=device) as sub:
        async for update in sub:
            assert isinstance(update, TelemetryUpdate)
            seen.append(int(update.value))


@pytest.mark.needs_mosquitto("shared-subscription failover; iotcore delivers some readings twice")
@pytest.mark.timeout(180)
async def test_two_ingests_two_fronts_kill_one_of_each(
    deployment: Deployment, broker: BrokerInfo, database_url: str, topic_prefix: str
) -> None:
    dep = deployment
    dep.start_ingest("ingest-a")
    dep.start_ingest("ingest-b")
    dep.start("front", "serve", "--processes", "2")

    async def ready() -> bool:
        for name in ("ingest-a", "ingest-b"):
            assert dep.procs[name].poll() is None, dep.log(name)
        kids = children(dep.procs["front"].pid)
        listening = sockets_on(dep.port, "0A")
        fronts_up = len(kids) == 2 and all(sockets_of(k) & listening for k in kids)
        return fronts_up and all(
            "ingest subscribed" in dep.log(n) for n in ("ingest-a", "ingest-b")
        )

    await wait_until(ready, timeout=60, interval=0.2)
    token = mint(key=SECRET, algorithm="HS256", sub="so", scopes="telemetry:read", ttl_s=600)
    url = f"ws://127.0.0.1:{dep.port}/ws"
    clients = [BridgeClient(url, token, backoff_initial_s=0.05) for _ in range(CLIENTS)]
    seen: list[list[int]] = [[] for _ in range(CLIENTS)]
    consumers = []
    for k, client in enumerate(clients):
        await client.connect()
        consumers.append(asyncio.create_task(_consume(client, f"so-{k % DEVICES}", seen[k])))
    db = await asyncpg.connect(database_url)
    try:

        async def all_subscribed() -> bool:
            return all(c._by_id for c in clients)

        await wait_until(all_subscribed)
        first, second = children(dep.procs["front"].pid)
        on_port = established_on(dep.port)
        per_front = [len(sockets_of(pid) & on_port) for pid in (first, second)]
        assert sum(per_front) == CLIENTS and min(per_front) > 0, per_front

        fleet = Fleet(broker.url, Topics(topic_prefix))
        fleet.start()

        def reached(i: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return fleet.progress >= i

            return check

        await wait_until(reached(800), timeout=30)
        dep.procs["ingest-a"].send_signal(signal.SIGKILL)
        dep.procs["ingest-a"].wait(10)
        dep.start_ingest("ingest-a")  # as systemd would: its session's messages come back
        await wait_until(reached(1600), timeout=30)
        os.kill(first, signal.SIGKILL)  # the supervisor restarts it; its clients reconnect
        await asyncio.to_thread(fleet.join, 60)

        async def all_acked() -> bool:
            return len(fleet.acked) == READINGS

        await wait_until(all_acked, timeout=30)

        async def all_stored() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM readings")) >= READINGS

        await wait_until(all_stored, timeout=60)
        rows = await db.fetch("SELECT device_id, value FROM readings")
        values = [int(r["value"]) for r in rows]
        assert len(values) == len(set(values)) == READINGS, "lost or doubled in storage"
        assert set(values) == fleet.acked

        expected = {
            d: {int(r["value"]) for r in rows if r["device_id"] == f"so-{d}"}
            for d in range(DEVICES)
        }

        def missed() -> dict[int, int]:
            """Readings storage has that a client did not see, counted per client."""
            gaps = {k: len(expected[k % DEVICES] - set(seen[k])) for k in range(CLIENTS)}
            return {k: n for k, n in gaps.items() if n}

        async def every_client_complete() -> bool:
            return not missed()

        with contextlib.suppress(AssertionError):  # the assertion below names what is missing
            await wait_until(every_client_complete, timeout=60, interval=0.2)
        assert not missed(), f"readings missed per client: {missed()}"
        for k in range(CLIENTS):
            assert len(seen[k]) == len(set(seen[k])), f"client {k} saw a reading twice"
            assert set(seen[k]) == expected[k % DEVICES]
        assert sum(c.connections for c in clients) > CLIENTS  # the killed front's reconnected
    finally:
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        for client in clients:
            await client.close()
        await db.close()
