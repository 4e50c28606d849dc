"""kill -9 the ingest in the middle of a QoS 1 flood: exactly N rows, none lost, none doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MESSAGES = 20_000
METRICS = 2
DEVICES = 20


def start_ingest(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "ingest"], env=env, stdout=out, stderr=out
        )


async def wait_ready(log: Path, proc: subprocess.Popen[bytes], starts: int) -> None:
    async def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        return log.read_text().count("ingest subscribed") >= starts

    await wait_until(ready, timeout=30)


@pytest.mark.timeout(240)
async def test_kill_9_mid_flood_loses_and_doubles_nothing(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_MQTT_URL": broker.url,
        "BRIDGE_MQTT_TOPIC_PREFIX": topic_prefix,
        "BRIDGE_INGEST_CLIENT_ID": f"crash-{uuid.uuid4().hex[:8]}",
        "BRIDGE_INGEST_PUBLISH_STREAM": "false",
    }
    log = tmp_path / "ingest.log"
    proc = start_ingest(env, log)
    db = await asyncpg.connect(database_url)
    try:
        await wait_ready(log, proc, 1)
        topics = Topics(topic_prefix)
        base = datetime.now(UTC) - timedelta(hours=1)
        sent: set[tuple[str, datetime]] = set()
        items = []
        for i in range(MESSAGES):
            device = f"crash-{i % DEVICES:03d}"
            ts = base + timedelta(milliseconds=i)
            sent.add((device, ts))
            values = {f"m{k}": i + k for k in range(METRICS)}
            items.append(
                (
                    topics.device_telemetry(device),
                    orjson.dumps({"ts": ts.isoformat(), "values": values}),
                )
            )

        peer = MqttPeer(broker.url)
        publishing = asyncio.create_task(asyncio.to_thread(peer.publish_many, items))
        try:

            async def some_stored() -> bool:
                return (
                    int(await db.fetchval("SELECT count(*) FROM readings"))
                    >= MESSAGES * METRICS // 5
                )

            await wait_until(some_stored, timeout=60, interval=0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            at_kill = int(await db.fetchval("SELECT count(*) FROM readings"))
            assert at_kill < MESSAGES * METRICS, "the flood ended before the kill; nothing tested"

            proc = start_ingest(env, log)
            await wait_ready(log, proc, 2)
            acked = await asyncio.wait_for(publishing, 120)
        finally:
            peer.close()
        assert acked == MESSAGES, "the broker did not acknowledge every publish"

        async def all_stored() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM readings")) >= MESSAGES * METRICS

        await wait_until(all_stored, timeout=120)
        rows = await db.fetch("SELECT device_id, metric, ts FROM readings")
        assert len(rows) == MESSAGES * METRICS
        stored = {(r["device_id"], r["ts"]) for r in rows}
        assert stored == sent, f"lost {len(sent - stored)}, unexpected {len(stored - sent)}"
        per_message = await db.fetchval(
            "SELECT count(*) FROM (SELECT device_id, ts FROM readings GROUP BY 1, 2 "
            "HAVING count(*) <> $1) x",
            METRICS,
        )
        assert per_message == 0
        assert await db.fetchval("SELECT count(*) FROM dead_letters") == 0
    finally:
        await db.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        print(log.read_text()[-3000:])
