"""`serve --processes 2`: two front processes on one port, each restarted when it dies.

Real processes, a real broker: clients land on both processes (SO_REUSEPORT), every client
gets the stream messages it subscribed to, and after one process is killed with SIGKILL its
clients reconnect (to the survivor or the restarted process) and receive again. With
BRIDGE_METRICS_PORT each process serves its own metrics on that port plus its index, so each
is scraped on its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from bridge.auth import mint
from bridge.embedded import free_port
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, wait_until
from tests.integration.frontkit import recv_type
from tests.integration.metrics_kit import get, samples
from tests.procnet import children, established_on, sockets_of, sockets_on

SECRET = "processes-secret-" + "p" * 40
CLIENTS = 24


def _two_free_ports() -> int:
    """A port P with P and P + 1 free (the two children's metrics ports)."""
    for _ in range(50):
        base = free_port()
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", base + 1))
        except OSError:
            continue
        return base
    raise AssertionError("no two adjacent free ports")


def _connections(metrics_port: int) -> float:
    found = samples(get(f"http://127.0.0.1:{metrics_port}/metrics"))
    return sum(v for (name, _), v in found.items() if name == "bridge_connections")


@pytest.fixture
def two_fronts(
    broker: BrokerInfo, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, str, int]]:
    port = free_port()
    metrics_port = _two_free_ports()
    prefix = f"mp{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_MQTT_URL=broker.url,
        BRIDGE_MQTT_TOPIC_PREFIX=prefix,
        BRIDGE_JWT_SECRET=SECRET,
        BRIDGE_WS_PORT=str(port),
        BRIDGE_METRICS_PORT=str(metrics_port),
        BRIDGE_WS_NEW_CONNECTIONS_PER_IP_PER_MIN="10000",
        BRIDGE_STATE_DIR=str(tmp_path / "state"),
    )
    with open(tmp_path / "front.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--processes", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, port, prefix, metrics_port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the supervisor did not stop on SIGTERM") from None
        assert not children(proc.pid)


async def _client(url: str, token: str) -> ClientConnection:
    ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"})
    await recv_type(ws, "connected")
    await ws.send(orjson.dumps({"type": "subscribe", "channel": "telemetry", "device_id": "d1"}))
    await recv_type(ws, "subscribed")
    return ws


def _event(i: int) -> bytes:
    return orjson.dumps(
        {"device_id": "d1", "metric": "t", "value": i, "unit": None, "ts": "x", "received_at": "y"}
    )


async def _all_receive(clients: list[ClientConnection], value: int) -> None:
    for ws in clients:
        msg = await recv_type(ws, "telemetry_update", timeout=10)
        assert msg["telemetry"]["t"]["value"] == value


async def test_two_processes_share_the_port_and_survive_a_kill(
    broker: BrokerInfo, two_fronts: tuple[subprocess.Popen[bytes], int, str, int]
) -> None:
    proc, port, prefix, metrics_port = two_fronts
    url = f"ws://127.0.0.1:{port}/ws"
    token = mint(key=SECRET, algorithm="HS256", sub="mp", scopes="telemetry:read", ttl_s=600)

    async def both_listening() -> bool:
        kids = children(proc.pid)
        listening = sockets_on(port, "0A")
        return len(kids) == 2 and all(sockets_of(pid) & listening for pid in kids)

    await wait_until(both_listening, timeout=30)
    clients = [await _client(url, token) for _ in range(CLIENTS)]
    first, second = children(proc.pid)
    on_port = established_on(port)
    per_child = {pid: len(sockets_of(pid) & on_port) for pid in (first, second)}
    assert sum(per_child.values()) == CLIENTS, per_child
    assert min(per_child.values()) > 0, f"one process got no clients: {per_child}"
    # each process's own metrics port counts its own clients, and only those
    by_port = sorted(_connections(metrics_port + i) for i in range(2))
    assert by_port == sorted(per_child.values()), (by_port, per_child)

    peer = MqttPeer(broker.url)
    topic = Topics(prefix).telemetry("d1", "t")
    try:
        peer.publish(topic, _event(1))
        await _all_receive(clients, 1)

        victim_sockets = sockets_of(first) & on_port
        os.kill(first, signal.SIGKILL)

        async def reaped() -> bool:
            return first not in children(proc.pid)

        await wait_until(reaped, timeout=10)
        survivors: list[ClientConnection] = []
        dropped = 0
        for ws in clients:
            try:
                pong = await ws.ping()
                await asyncio.wait_for(pong, 5)
                survivors.append(ws)
            except Exception:
                dropped += 1
        assert dropped == len(victim_sockets)

        async def restarted() -> bool:
            return await both_listening()

        await wait_until(restarted, timeout=30)
        reconnected = [await _client(url, token) for _ in range(dropped)]
        everyone = survivors + reconnected
        peer.publish(topic, _event(2))
        await _all_receive(everyone, 2)
        for ws in everyone:
            await ws.close()
    finally:
        peer.client.loop_stop()
        peer.client.disconnect()
