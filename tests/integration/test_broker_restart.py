"""A broker restart, idle and under load: the ingest and the front reconnect and resubscribe on
their own, a WebSocket client stays connected and keeps receiving, nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import connect

from bridge.app import run_front
from bridge.auth import mint
from bridge.config import Settings
from bridge.embedded import MosquittoProcess, free_port
from ingest.mqtt import MqttEndpoint
from ingest.service import IngestConfig, IngestService
from ingest.topics import Topics
from tests.helpers import MqttPeer, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SECRET = "restart-test-secret-" + "x" * 40


@pytest.mark.timeout(90)
async def test_broker_restart_under_ingest_and_front(database_url: str, tmp_path: Path) -> None:
    broker = MosquittoProcess(tmp_path / "mosquitto", port=free_port())
    url = broker.start()
    topics = Topics("restart")
    ingest = IngestService(
        IngestConfig(
            mqtt=MqttEndpoint.from_url(url),
            database_url=database_url,
            topics=topics,
            client_id=f"ingest-{uuid.uuid4().hex[:8]}",
        )
    )
    ws_port = free_port()
    settings = Settings(
        mqtt_url=url, jwt_secret=SECRET, ws_port=ws_port, mqtt_topic_prefix="restart"
    )
    stop = asyncio.Event()
    ready_i, ready_f = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(ingest.run(stop, ready_i)),
        asyncio.create_task(run_front(settings, url, database_url, stop, ready_f)),
    ]
    db = await asyncpg.connect(database_url)
    try:
        await asyncio.wait_for(asyncio.gather(ready_i.wait(), ready_f.wait()), 10)
        token = mint(key=SECRET, algorithm="HS256", sub="a", scopes="telemetry:read")
        ws = await connect(
            f"ws://127.0.0.1:{ws_port}/ws", additional_headers={"Authorization": f"Bearer {token}"}
        )
        await ws.recv()

        async def front_up() -> bool:
            await ws.send('{"type": "subscribe", "channel": "telemetry", "device_id": "r1"}')
            reply = orjson.loads(await ws.recv())
            return reply["type"] == "subscribed"

        await wait_until(front_up)

        async def publish_and_receive(value: float) -> None:
            peer = MqttPeer(url)
            try:
                peer.publish(topics.device_telemetry("r1"), orjson.dumps({"v": value}))
            finally:
                peer.close()
            while True:
                msg = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
                if msg["type"] == "telemetry_update" and msg["telemetry"]["v"]["value"] == value:
                    return

        await publish_and_receive(1.0)
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)  # same port, same persistence directory

        async def stored_after_restart() -> bool:
            try:
                await publish_and_receive(2.0)
            except (TimeoutError, OSError, RuntimeError):
                return False
            return True

        await wait_until(stored_after_restart, timeout=60, interval=0.5)
        assert int(await db.fetchval("SELECT count(*) FROM readings WHERE value = 1.0")) == 1
        assert int(await db.fetchval("SELECT count(*) FROM readings WHERE value = 2.0")) >= 1
        await ws.close()
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        await db.close()
        broker.stop()


@pytest.mark.timeout(150)
async def test_graceful_broker_restart_under_load_loses_and_doubles_nothing(
    database_url: str, tmp_path: Path
) -> None:
    """Devices keep publishing at QoS 1 through a broker restart: every message the broker
    acknowledged is stored once, and a WebSocket client stays connected and keeps receiving."""
    broker = MosquittoProcess(tmp_path / "mosquitto", port=free_port())
    url = broker.start()
    topics = Topics("load")
    ingest = IngestService(
        IngestConfig(
            mqtt=MqttEndpoint.from_url(url),
            database_url=database_url,
            topics=topics,
            client_id=f"ingest-{uuid.uuid4().hex[:8]}",
        )
    )
    ws_port = free_port()
    settings = Settings(mqtt_url=url, jwt_secret=SECRET, ws_port=ws_port, mqtt_topic_prefix="load")
    stop = asyncio.Event()
    ready_i, ready_f = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(ingest.run(stop, ready_i)),
        asyncio.create_task(run_front(settings, url, database_url, stop, ready_f)),
    ]
    db = await asyncpg.connect(database_url)
    publishing = threading.Event()
    try:
        await asyncio.wait_for(asyncio.gather(ready_i.wait(), ready_f.wait()), 10)
        token = mint(key=SECRET, algorithm="HS256", sub="a", scopes="telemetry:read")
        ws = await connect(
            f"ws://127.0.0.1:{ws_port}/ws", additional_headers={"Authorization": f"Bearer {token}"}
        )
        await ws.recv()
        await ws.send('{"type": "subscribe", "channel": "telemetry", "device_id": "ld-0"}')
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        await asyncio.sleep(0.5)  # the front's broker subscription is in place

        base = datetime.now(UTC) - timedelta(minutes=10)
        infos: list[tuple[int, Any]] = []
        peer = MqttPeer(url)
        pubacks: set[int] = set()  # mids; paho reports them also for queued-then-resent ones
        peer.client.on_publish = lambda _c, _u, mid, _rc, _p: pubacks.add(mid)

        def device_fleet() -> None:
            # ~400 messages/s from 4 devices, through the restart; paho queues while the
            # broker is away and resends when it is back
            for i in range(4000):
                body = orjson.dumps({"ts": (base + timedelta(milliseconds=i)).isoformat(), "v": i})
                infos.append(
                    (i, peer.client.publish(topics.device_telemetry(f"ld-{i % 4}"), body, qos=1))
                )
                if i == 1200:
                    publishing.set()
                time.sleep(0.0025)

        fleet = asyncio.create_task(asyncio.to_thread(device_fleet))
        await asyncio.to_thread(publishing.wait, 30)
        await asyncio.to_thread(broker.stop)  # graceful: SIGTERM, persistence saved
        await asyncio.to_thread(broker.start)  # same port, same persistence directory
        await fleet

        # publishes made while the broker was away report "not connected" but stay queued
        # in paho and go out after the reconnect: wait for their PUBACKs
        async def all_acked() -> bool:
            return all(info.mid in pubacks for _, info in infos)

        with contextlib.suppress(AssertionError):
            await wait_until(all_acked, timeout=60, interval=0.2)
        acked = {i for i, info in infos if info.mid in pubacks}
        peer.close()
        assert len(acked) == 4000, f"{4000 - len(acked)} publishes never acknowledged"

        async def all_stored() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM readings")) >= len(acked)

        await wait_until(all_stored, timeout=60)
        values = [int(r["value"]) for r in await db.fetch("SELECT value FROM readings")]
        assert len(values) == len(set(values)) == len(acked) and set(values) == acked

        # the WebSocket client never disconnected and receives readings published after
        # the restart
        late = 3999 - (3999 % 4)  # the last value of device ld-0
        while True:
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            if msg["type"] == "telemetry_update" and msg["telemetry"]["v"]["value"] == late:
                break
        await ws.close()
    finally:
        publishing.set()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        await db.close()
        broker.stop()
