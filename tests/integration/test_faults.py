"""Real ingest processes killed at the worst moments, a backlog built while the ingest is down,
and two ingests sharing the load with one killed. Each test ends the same way: every message
the broker acknowledged to the device is stored, once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, wait_until
from tests.integration.test_crash import start_ingest, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def fleet(
    topics: Topics, n: int, tag: str
) -> tuple[list[tuple[str, bytes]], set[tuple[str, datetime]]]:
    base = datetime.now(UTC) - timedelta(hours=2)
    items, sent = [], set()
    for i in range(n):
        device, ts = f"{tag}-{i % 25:02d}", base + timedelta(milliseconds=i)
        sent.add((device, ts))
        items.append(
            (topics.device_telemetry(device), orjson.dumps({"ts": ts.isoformat(), "v": i}))
        )
    return items, sent


def ingest_env(broker: BrokerInfo, database_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_DATABASE_URL=database_url,
        BRIDGE_MQTT_URL=broker.url,
        BRIDGE_MQTT_TOPIC_PREFIX=prefix,
        BRIDGE_INGEST_CLIENT_ID=f"fault-{uuid.uuid4().hex[:8]}",
        BRIDGE_INGEST_PUBLISH_STREAM="false",
        BRIDGE_INGEST_BATCH_MAX_MESSAGES="500",
        **extra,
    )
    return env


async def assert_stored_once(db: asyncpg.Connection, sent: set[tuple[str, datetime]]) -> None:
    async def all_stored() -> bool:
        return int(await db.fetchval("SELECT count(*) FROM readings")) >= len(sent)

    await wait_until(all_stored, timeout=120)
    rows = await db.fetch("SELECT device_id, ts FROM readings")
    stored = {(r["device_id"], r["ts"]) for r in rows}
    assert len(rows) == len(sent), f"{len(rows) - len(sent)} extra rows"
    assert stored == sent, f"lost {len(sent - stored)}, unexpected {len(stored - sent)}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("point", ["in_insert", "after_commit"])
async def test_crash_inside_the_transaction_or_before_the_ack(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path, point: str
) -> None:
    env = ingest_env(broker, database_url, topic_prefix)
    log = tmp_path / "ingest.log"
    proc = start_ingest({**env, "BRIDGE_FAULT": f"{point}:3"}, log)
    db = await asyncpg.connect(database_url)
    peer = MqttPeer(broker.url)
    try:
        await wait_ready(log, proc, 1)
        items, sent = fleet(Topics(topic_prefix), 6000, "f")
        publishing = asyncio.create_task(asyncio.to_thread(peer.publish_many, items))
        code = await asyncio.to_thread(proc.wait, 60)
        assert code == -signal.SIGKILL, "the fault point was never reached"
        at_crash = int(await db.fetchval("SELECT count(*) FROM readings"))
        # in_insert: the third batch's rows died with its transaction; after_commit: they
        # are stored but were never acknowledged, so the broker will deliver them again
        assert 0 < at_crash < len(items)
        proc = start_ingest(env, log)  # same client id: the same persistent session
        await wait_ready(log, proc, 2)
        assert await asyncio.wait_for(publishing, 120) == len(items)
        await assert_stored_once(db, sent)
    finally:
        peer.close()
        await db.close()
        stop(proc)


@pytest.mark.timeout(180)
async def test_backlog_published_while_the_ingest_is_down(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    env = ingest_env(broker, database_url, topic_prefix)
    log = tmp_path / "ingest.log"
    proc = start_ingest(env, log)
    db = await asyncpg.connect(database_url)
    peer = MqttPeer(broker.url)
    try:
        await wait_ready(log, proc, 1)  # the persistent session now exists at the broker
        stop(proc)
        items, sent = fleet(Topics(topic_prefix), 10_000, "b")
        assert await asyncio.to_thread(peer.publish_many, items) == len(items)
        assert await db.fetchval("SELECT count(*) FROM readings") == 0
        proc = start_ingest(env, log)
        await wait_ready(log, proc, 2)
        await assert_stored_once(db, sent)
    finally:
        peer.close()
        await db.close()
        stop(proc)


@pytest.mark.timeout(240)
async def test_two_shared_ingests_one_killed(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    a_env = ingest_env(broker, database_url, topic_prefix, BRIDGE_INGEST_SHARED="true")
    b_env = {**a_env, "BRIDGE_INGEST_CLIENT_ID": a_env["BRIDGE_INGEST_CLIENT_ID"] + "-b"}
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a, b = start_ingest(a_env, a_log), start_ingest(b_env, b_log)
    db = await asyncpg.connect(database_url)
    peer = MqttPeer(broker.url)
    try:
        await wait_ready(a_log, a, 1)
        await wait_ready(b_log, b, 1)
        items, sent = fleet(Topics(topic_prefix), 20_000, "s")
        publishing = asyncio.create_task(asyncio.to_thread(peer.publish_many, items))

        async def some_stored() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM readings")) >= 2000

        await wait_until(some_stored, timeout=60, interval=0.01)
        a.send_signal(signal.SIGKILL)
        a.wait()
        assert int(await db.fetchval("SELECT count(*) FROM readings")) < len(items)
        # b carries on alone; a comes back (as systemd would restart it) for what the
        # broker kept in a's session
        a = start_ingest(a_env, a_log)
        await wait_ready(a_log, a, 2)
        assert await asyncio.wait_for(publishing, 120) == len(items)
        await assert_stored_once(db, sent)
        assert "ingest subscribed" in b_log.read_text() and b.poll() is None
    finally:
        peer.close()
        await db.close()
        stop(a)
        stop(b)


@pytest.mark.timeout(180)
async def test_readings_stored_by_a_run_killed_before_streaming_them_are_streamed(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Killed between a batch's commit and its stream publish: the broker redelivers the
    batch's messages (DUP) to the next run, which finds them stored. Their readings reach
    the validated stream all the same, as stored (the first received_at), or live
    subscribers would never see them."""
    topics = Topics(topic_prefix)
    env = {
        **ingest_env(broker, database_url, topic_prefix),
        "BRIDGE_INGEST_PUBLISH_STREAM": "true",
        "BRIDGE_INGEST_BATCH_MAX_MESSAGES": "100",
    }
    log = tmp_path / "ingest.log"
    proc = start_ingest({**env, "BRIDGE_FAULT": "after_commit:3"}, log)
    db = await asyncpg.connect(database_url)
    peer, watcher = MqttPeer(broker.url), MqttPeer(broker.url)
    try:
        watcher.subscribe(topics.telemetry_filter(None, None), qos=1)
        await wait_ready(log, proc, 1)
        items, sent = fleet(topics, 1000, "k")
        publishing = asyncio.create_task(asyncio.to_thread(peer.publish_many, items))
        assert await asyncio.to_thread(proc.wait, 60) == -signal.SIGKILL
        assert int(await db.fetchval("SELECT count(*) FROM readings")) > 0
        proc = start_ingest(env, log)  # same client id: the same persistent session
        await wait_ready(log, proc, 2)
        assert await asyncio.wait_for(publishing, 120) == len(items)
        await assert_stored_once(db, sent)
        stored = {  # each reading's value is unique (the fleet's counter)
            (r["device_id"], r["value"]): r["received_at"]
            for r in await db.fetch("SELECT device_id, value, received_at FROM readings")
        }

        def streamed() -> dict[tuple[str, float], set[datetime]]:
            out: dict[tuple[str, float], set[datetime]] = {}
            for msg in watcher.messages():
                event = orjson.loads(msg.payload)
                key = (event["device_id"], event["value"])
                out.setdefault(key, set()).add(datetime.fromisoformat(event["received_at"]))
            return out

        async def all_streamed() -> bool:
            return streamed().keys() >= stored.keys()

        await wait_until(all_streamed, timeout=30)
        # each reading streamed with its stored received_at only, whichever run streamed it
        assert {k: {at} for k, at in stored.items()} == streamed()
    finally:
        peer.close()
        watcher.close()
        await db.close()
        stop(proc)
