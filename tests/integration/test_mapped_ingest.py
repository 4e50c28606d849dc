"""Devices on their firmware's own topics, through a real Mosquitto into a real PostgreSQL:
read by a mapping (tests/mapped_kit.py stands in for the engine's profiles), stored exactly
once like the bridge's own format, dead-lettered with a reason, reloaded without a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, running_ingest, wait_until
from tests.mapped_kit import BareNumber, Broken, ListSource, Lwt, Router, TeleSensor
from tests.stack import RunningIngest, ingest_fixture

pytestmark = pytest.mark.integration

TIME = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0, tzinfo=None)


def sensor(i: int = 0, **values: Any) -> bytes:
    at = (TIME + timedelta(seconds=i)).isoformat()
    return orjson.dumps({"Time": at, **values})


@pytest.fixture
async def ingest(
    broker: BrokerInfo, database_url: str, topic_prefix: str
) -> AsyncIterator[RunningIngest]:
    source = ListSource(Router([TeleSensor(), Lwt(), Broken()], extra_filters=("tele/+/STATE",)))
    async for running in ingest_fixture(
        broker, database_url, topic_prefix, mappings=source, mappings_poll_s=0.05
    ):
        yield running


@pytest.fixture
def peer(broker: BrokerInfo) -> Any:
    p = MqttPeer(broker.url)
    yield p
    p.close()


async def test_mapped_readings_are_stored_once_even_when_redelivered(
    ingest: RunningIngest, peer: MqttPeer
) -> None:
    payload = sensor(ENERGY={"Power": 42, "Voltage": 230.5}, Switch1="ON", AM2301={"T": 21.5})
    peer.publish(ingest.topic("tele/kitchen/SENSOR"), payload)
    peer.publish(ingest.topic("tele/kitchen/SENSOR"), payload)  # a redelivery: same message
    peer.publish(ingest.topics.device_telemetry("own-1"), b'{"t": 1}')  # our format alongside
    await wait_until(lambda: _committed(ingest, 3))
    rows = await ingest.db.fetch(
        "SELECT metric, value, ts, received_at FROM readings WHERE device_id = 'kitchen'"
    )
    assert sorted((r["metric"], r["value"]) for r in rows) == [
        ("AM2301.T", 21.5),
        ("ENERGY.Power", 42.0),
        ("ENERGY.Voltage", 230.5),
    ]
    assert {r["ts"] for r in rows} == {TIME.replace(tzinfo=UTC)}
    assert len({r["received_at"] for r in rows}) == 3  # each reading its own, as ours
    assert await ingest.count("SELECT count(*) FROM readings WHERE device_id = 'own-1'") == 1
    stats = ingest.service.stats
    assert stats.readings_duplicate == 3
    assert stats.mapped_readings == {"tele_sensor": 6}  # found twice, stored once
    text = {m.name: m for m in ingest.service.collector.collect()}
    sample = text["bridge_ingest_mapped_readings"].samples[0]
    assert sample.labels == {"mapping": "tele_sensor"} and sample.value == 6


async def test_mapped_readings_reach_the_validated_stream(
    ingest: RunningIngest, peer: MqttPeer, broker: BrokerInfo
) -> None:
    watcher = MqttPeer(broker.url)
    try:
        watcher.subscribe(ingest.topics.telemetry_filter("hall", None))
        peer.publish(ingest.topic("tele/hall/SENSOR"), sensor(Temp=19.25))
        await wait_until(_async(lambda: len(watcher.messages()) == 1))
        msg = watcher.messages()[0]
        assert msg.topic == ingest.topics.telemetry("hall", "Temp")
        assert orjson.loads(msg.payload)["value"] == 19.25
    finally:
        watcher.close()


async def test_what_cannot_be_stored_is_dead_lettered_with_its_reason_and_mapping(
    ingest: RunningIngest, peer: MqttPeer
) -> None:
    peer.publish(ingest.topic("tele/kitchen/SENSOR"), b"{not json")
    peer.publish(ingest.topic("tele/bad id/SENSOR"), sensor(T=1))
    peer.publish(ingest.topic("tele/kitchen/STATE"), b'{"POWER": "ON"}')  # no mapping routes it
    peer.publish(ingest.topic("tele/kitchen/SENSOR"), sensor(**{"bad metric!": 1}))
    far = (datetime.now(UTC) + timedelta(days=2)).replace(tzinfo=None).isoformat()
    peer.publish(ingest.topic("tele/kitchen/SENSOR"), orjson.dumps({"Time": far, "T": 1}))
    peer.publish(ingest.topic("broken/x"), b"1")
    await wait_until(lambda: _dead(ingest, 6))
    rows = await ingest.db.fetch(
        "SELECT topic, device_id, reason, detail FROM dead_letters ORDER BY id"
    )
    got = {(r["topic"].split("/", 1)[1], r["reason"]) for r in rows}
    assert got == {
        ("tele/kitchen/SENSOR", "invalid_json"),
        ("tele/bad id/SENSOR", "invalid_device_id"),
        ("tele/kitchen/STATE", "no_mapping"),
        ("tele/kitchen/SENSOR", "validation_error"),
        ("tele/kitchen/SENSOR", "timestamp_out_of_range"),
        ("broken/x", "unprocessable"),
    }
    details = {r["reason"]: r["detail"] for r in rows}
    assert details["invalid_json"].startswith("mapping tele_sensor: ")
    assert "topic level device" in details["invalid_device_id"]
    assert await ingest.count() == 0  # a bad message is refused whole, never mangled


async def test_a_mapped_status_is_stored_like_a_device_status(
    ingest: RunningIngest, peer: MqttPeer
) -> None:
    peer.publish(ingest.topic("tele/porch/LWT"), b"Online")
    await wait_until(lambda: _status(ingest, "porch", "online"))
    peer.publish(ingest.topic("tele/porch/LWT"), b"Offline")
    await wait_until(lambda: _status(ingest, "porch", "offline"))


async def test_reload_subscribes_and_unsubscribes_without_restart(
    ingest: RunningIngest, peer: MqttPeer
) -> None:
    service = ingest.service
    assert service.mappings is not None
    topic = ingest.topic("esp1/sensor/temperature/state")
    ingest.source.set(Router([TeleSensor(), BareNumber()]))
    await wait_until(_async(lambda: service.stats.mapping_reloads >= 1))
    assert ingest.topic("+/sensor/+/state") in service.mappings.subscribed
    assert ingest.topic("tele/+/LWT") not in service.mappings.subscribed
    peer.publish(topic, b"21.5")
    await wait_until(
        lambda: _committed(ingest, 1, "SELECT count(*) FROM readings WHERE device_id = 'esp1'")
    )
    # a broken source keeps what is in use
    ingest.source.fail = True
    ingest.source.set(Router([]))
    await wait_until(_async(lambda: service.stats.mapping_reload_errors >= 1))
    assert ingest.topic("+/sensor/+/state") in service.mappings.subscribed
    # removed: the ingest no longer subscribes, so nothing arrives (no dead letter either)
    ingest.source.fail = False
    ingest.source.set(Router([TeleSensor()]))
    mappings = service.mappings
    await wait_until(_async(lambda: len(mappings.subscribed) == 1))
    received = service.stats.messages_received
    peer.publish(topic, b"22.5")
    peer.publish(ingest.topic("tele/esp1/SENSOR"), sensor(T=1))  # still mapped: a marker
    await wait_until(lambda: _committed(ingest, 2, "SELECT count(*) FROM readings"))
    assert service.stats.messages_received == received + 1
    assert await ingest.count("SELECT count(*) FROM dead_letters") == 0


@pytest.mark.needs_mosquitto("shared subscriptions split the load; iotcore may deliver twice")
async def test_two_shared_ingests_split_mapped_load_and_lose_nothing(
    broker: BrokerInfo, database_url: str, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    group = ListSource(Router([TeleSensor()]))
    n = 400

    def make() -> Any:
        return running_ingest(broker.url, database_url, topics, shared_subscription=True,
                              mappings=group)  # fmt: skip

    async with make() as one, make() as two:
        peer = MqttPeer(broker.url)
        try:
            items = [(f"{topic_prefix}/tele/d{i % 20}/SENSOR", sensor(i, T=i)) for i in range(n)]
            assert peer.publish_many(items) == n
        finally:
            peer.close()
        db = await asyncpg.connect(database_url)
        try:
            count = "SELECT count(*) FROM readings"
            await wait_until(lambda: _fetch_is(db, count, n))
        finally:
            await db.close()
        split = [one.stats.mapped_readings.get("tele_sensor", 0),
                 two.stats.mapped_readings.get("tele_sensor", 0)]  # fmt: skip
        assert all(split) and sum(split) == n


def _async(check: Any) -> Any:
    async def run() -> bool:
        return bool(check())

    return run


async def _fetch_is(db: asyncpg.Connection, sql: str, n: int) -> bool:
    return int(await db.fetchval(sql)) == n


async def _committed(
    ingest: RunningIngest, n: int, sql: str = "SELECT count(*) FROM readings"
) -> bool:
    # every message committed (the duplicate too), and the rows there
    stats = ingest.service.stats
    return stats.messages >= stats.messages_received and await ingest.count(sql) >= n


async def _dead(ingest: RunningIngest, n: int) -> bool:
    return await ingest.count("SELECT count(*) FROM dead_letters") >= n


async def _status(ingest: RunningIngest, device: str, status: str) -> bool:
    row = await ingest.db.fetchrow(
        "SELECT new_status FROM device_status_events WHERE device_id = $1 ORDER BY id DESC LIMIT 1",
        device,
    )
    return row is not None and row["new_status"] == status
