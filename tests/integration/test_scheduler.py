"""`up` against external services: the scheduler's jobs (offline detection, system status,
rollups) as a user would see them on MQTT, on the WebSocket and in the database."""

from __future__ import annotations

import asyncio
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


async def test_each_job_runs_in_one_process_at_a_time(database_url: str) -> None:
    from bridge.app import _exclusive

    first, second = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        assert await _exclusive(first, "rollup refresh")
        assert not await _exclusive(second, "rollup refresh")  # held by the first connection
        assert await _exclusive(second, "retention")  # other jobs are independent
        await first.close()  # the lock goes with the connection (a crashed job frees it too)
        assert await _exclusive(second, "rollup refresh")
    finally:
        await first.close()
        await second.close()


@pytest.mark.timeout(90)
async def test_scheduler_command_runs_the_jobs_for_ingests_that_do_not(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_DATABASE_URL=database_url,
        BRIDGE_MQTT_URL=broker.url,
        BRIDGE_MQTT_TOPIC_PREFIX=topic_prefix,
        BRIDGE_STATE_DIR=str(tmp_path),
        BRIDGE_INGEST_CLIENT_ID=f"nosched-{topic_prefix}",
        BRIDGE_INGEST_SCHEDULER="false",
        BRIDGE_ROLLUP_INTERVAL_S="0.5",
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: tmp_path / f"{name}.log" for name in ("ingest", "scheduler")}
    for name, path in logs.items():
        with open(path, "wb") as out:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "bridge", name], env=env, stdout=out, stderr=out
            )
    peer = MqttPeer(broker.url)
    db = await asyncpg.connect(database_url)
    try:

        async def subscribed() -> bool:
            assert procs["ingest"].poll() is None, logs["ingest"].read_text()
            return (
                "ingest subscribed" in logs["ingest"].read_text()
                and "scheduler running" in logs["scheduler"].read_text()
            )

        await wait_until(subscribed, timeout=30)
        # with the scheduler stopped nothing folds the readings: the ingest runs no jobs
        procs["scheduler"].send_signal(signal.SIGTERM)
        assert procs["scheduler"].wait(30) == 0, logs["scheduler"].read_text()[-2000:]
        peer.publish(Topics(topic_prefix).device_telemetry("sch-1"), b'{"t": 1}')

        async def stored() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM readings"))

        await wait_until(stored)
        await asyncio.sleep(1.5)  # three rollup periods: an ingest with jobs would have run
        assert await db.fetchval("SELECT count(*) FROM rollup_pending") >= 1
        with open(logs["scheduler"], "ab") as out:
            procs["scheduler"] = subprocess.Popen(
                [sys.executable, "-m", "bridge", "scheduler"], env=env, stdout=out, stderr=out
            )

        async def rolled_up() -> bool:
            return await db.fetchval("SELECT count(*) FROM rollup_pending") == 0

        await wait_until(rolled_up, timeout=20)
        assert await db.fetchval("SELECT sum(count) FROM readings_1m") == 1
    finally:
        await db.close()
        peer.close()
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            assert proc.wait(30) == 0, logs[name].read_text()[-2000:]
