"""A broker restart: the ingest and the front reconnect and resubscribe on their own, and a
WebSocket client stays connected and keeps receiving."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

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
