"""`up` against external services: the scheduler's jobs (offline detection, system status,
rollups) as a user would see them on MQTT, on the WebSocket and in the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import orjson
import pytest

from bridge.auth import mint
from bridge.embedded import free_port
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, wait_until
from tests.integration.frontkit import recv, recv_type

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SECRET = "scheduler-test-secret-" + "s" * 40


@pytest.mark.timeout(90)
async def test_silent_device_goes_offline_and_system_status_is_published(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_DATABASE_URL=database_url,
        BRIDGE_MQTT_URL=broker.url,
        BRIDGE_MQTT_TOPIC_PREFIX=topic_prefix,
        BRIDGE_STATE_DIR=str(tmp_path),
        BRIDGE_JWT_SECRET=SECRET,
        BRIDGE_WS_PORT=str(port),
        BRIDGE_INGEST_CLIENT_ID=f"sched-{topic_prefix}",
        BRIDGE_DEVICE_OFFLINE_AFTER_S="2",
        BRIDGE_DEVICE_CHECK_INTERVAL_S="0.5",
        BRIDGE_SYSTEM_STATUS_INTERVAL_S="0.5",
        BRIDGE_ROLLUP_INTERVAL_S="0.5",
    )
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "up"], env=env, stdout=out, stderr=out
        )
    topics = Topics(topic_prefix)
    peer = MqttPeer(broker.url)
    try:

        async def up() -> bool:
            assert proc.poll() is None, log.read_text()
            return "front listening" in log.read_text() and "ingest subscribed" in log.read_text()

        await wait_until(up, timeout=30)
        peer.subscribe(f"{topic_prefix}/status/+")
        peer.subscribe(f"{topic_prefix}/system/+")
        from websockets.asyncio.client import connect

        token = mint(key=SECRET, algorithm="HS256", sub="ops", scopes="devices:read")
        async with connect(
            f"ws://127.0.0.1:{port}/ws", additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            await recv(ws)
            await ws.send('{"type": "subscribe", "channel": "system"}')
            assert (await recv(ws))["type"] == "subscribed"
            update = await recv_type(ws, "system_status_update", timeout=10)
            assert {"cpu_usage", "memory_usage", "disk_usage", "active_connections"} <= update[
                "metrics"
            ].keys()
            assert update["component"].startswith("bridge-")

        peer.publish(topics.device_telemetry("sil-1"), b'{"t": 1}')

        def changes() -> list[tuple[str | None, str]]:
            return [
                (e["old_status"], e["new_status"])
                for e in (orjson.loads(m.payload) for m in peer.messages(topics.status("sil-1")))
            ]

        async def went_offline() -> bool:
            return ("online", "offline") in changes()

        await wait_until(went_offline, timeout=20)
        assert changes()[:2] == [(None, "online"), ("online", "offline")]
        peer.publish(topics.device_telemetry("sil-1"), b'{"t": 2}')

        async def back_online() -> bool:
            return ("offline", "online") in changes()

        await wait_until(back_online, timeout=10)
        system = [orjson.loads(m.payload) for m in peer.messages(f"{topic_prefix}/system/")]
        assert system and system[-1]["ingest_rate"] is not None

        # the rollup job folds both readings into the minute and hour rollups
        db = await asyncpg.connect(database_url)
        try:

            async def rolled_up() -> bool:
                pending = await db.fetchval("SELECT count(*) FROM rollup_pending")
                hours = await db.fetchval(
                    "SELECT coalesce(sum(count), 0) FROM readings_1h WHERE device_id = 'sil-1'"
                )
                return pending == 0 and hours == 2

            await wait_until(rolled_up, timeout=10)
        finally:
            await db.close()
    finally:
        peer.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()[-2000:]
