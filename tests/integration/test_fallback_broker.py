"""The in-process fallback broker (iotcore, MQTT 3.1.1) carries the same exactly-once flow."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from bridge.embedded import IotcoreBroker, free_port
from ingest.topics import Topics
from tests.helpers import MqttPeer, running_ingest, wait_until

pytestmark = pytest.mark.integration


@pytest.mark.timeout(60)
async def test_ingest_over_mqtt_311_with_a_persistent_session(
    database_url: str, tmp_path: Path
) -> None:
    pytest.importorskip("iotcore", reason="the iotcore fallback broker is not installed")
    broker = IotcoreBroker(tmp_path / "iotcore", port=free_port())
    url = broker.start()
    assert url.endswith("?protocol=3.1.1")
    topics = Topics("fb")
    client_id = f"fallback-{uuid.uuid4().hex[:8]}"  # one persistent session for both runs
    db = await asyncpg.connect(database_url)
    peer = MqttPeer(url)
    base = datetime.now(UTC) - timedelta(minutes=1)

    def payload(i: int) -> bytes:
        return orjson.dumps({"ts": (base + timedelta(seconds=i)).isoformat(), "v": i})

    async def run_until_stored(n: int) -> None:
        async def stored() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM readings")) >= n

        async with running_ingest(url, database_url, topics, client_id=client_id):
            if n == 10:
                for i in range(10):
                    peer.publish(topics.device_telemetry("fb-1"), payload(i))
            await wait_until(stored, timeout=20)

    try:
        await run_until_stored(10)
        # while the ingest is away its session queues the messages
        for i in range(10, 20):
            peer.publish(topics.device_telemetry("fb-1"), payload(i))
        await run_until_stored(20)
        assert int(await db.fetchval("SELECT count(*) FROM readings")) == 20
    finally:
        peer.close()
        await db.close()
        broker.stop()
