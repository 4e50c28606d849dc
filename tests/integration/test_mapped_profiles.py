"""The built-in profiles end to end: a real ingest with BRIDGE_MAPPINGS-style profiles (the
real mapping engine, not a stand-in), devices publishing their firmware's own messages to a
real Mosquitto, and what PostgreSQL holds afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from ingest.mapping import sparkplug_proto as sp
from ingest.mapping_source import ConfiguredMappings
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, running_ingest, wait_until

pytestmark = pytest.mark.integration

AT = (datetime.now(UTC) - timedelta(minutes=30)).replace(microsecond=0)


@pytest.fixture
async def db(
    broker: BrokerInfo, database_url: str, topic_prefix: str
) -> AsyncIterator[tuple[asyncpg.Connection, Topics]]:
    topics = Topics(topic_prefix)
    source = ConfiguredMappings(profiles="tasmota,esphome,influx_line,sparkplug_b")
    async with running_ingest(broker.url, database_url, topics, mappings=source):
        conn = await asyncpg.connect(database_url)
        try:
            yield conn, topics
        finally:
            await conn.close()


@pytest.fixture
def peer(broker: BrokerInfo) -> Any:
    p = MqttPeer(broker.url)
    yield p
    p.close()


def _spb(seq: int, *metrics: dict[str, Any], later_s: int = 0) -> bytes:
    msg = sp.Payload()
    msg.timestamp = int(AT.timestamp() * 1000) + later_s * 1000
    msg.seq = seq
    for fields in metrics:
        metric = msg.metrics.add()
        for key, value in fields.items():
            setattr(metric, key, value)
    return msg.SerializeToString()


async def _readings(conn: asyncpg.Connection, device: str) -> dict[str, float]:
    rows = await conn.fetch("SELECT metric, value FROM readings WHERE device_id = $1", device)
    return {r["metric"]: r["value"] for r in rows}


async def test_each_profile_stores_what_its_firmware_sends(
    db: tuple[asyncpg.Connection, Topics], peer: MqttPeer
) -> None:
    conn, topics = db
    at = AT.replace(tzinfo=None).isoformat()  # Tasmota's Time has no offset (read as UTC)
    tasmota = {"Time": at, "ENERGY": {"Power": 42, "Voltage": 230.5}, "TempUnit": "C"}
    peer.publish(f"{topics.prefix}/tele/plug-1/SENSOR", orjson.dumps(tasmota))
    peer.publish(f"{topics.prefix}/tele/plug-1/LWT", b"Offline")
    peer.publish(f"{topics.prefix}/node-7/sensor/temperature/state", b"21.5")
    line = f"weather,site=a temperature=19.5,humidity=40i {int(AT.timestamp() * 1e9)}"
    peer.publish(f"{topics.prefix}/telegraf/host-3/weather", line.encode())
    birth = _spb(
        0,
        {"name": "bdSeq", "datatype": 8, "long_value": 0},
        {"name": "Motor/RPM", "alias": 7, "datatype": sp.DOUBLE, "double_value": 1500.0},
    )
    peer.publish(f"{topics.prefix}/spBv1.0/plant/NBIRTH/edge-1", birth)
    peer.publish(
        f"{topics.prefix}/spBv1.0/plant/NDATA/edge-1",
        _spb(1, {"alias": 7, "datatype": sp.DOUBLE, "double_value": 1510.0}, later_s=1),
    )

    async def stored() -> bool:
        return int(await conn.fetchval("SELECT count(*) FROM readings")) >= 6

    await wait_until(stored, timeout=20)
    assert await _readings(conn, "plug-1") == {"ENERGY.Power": 42, "ENERGY.Voltage": 230.5}
    assert await _readings(conn, "node-7") == {"temperature": 21.5}
    assert await _readings(conn, "host-3") == {"temperature": 19.5, "humidity": 40}
    rpm = await conn.fetch(
        "SELECT value FROM readings WHERE device_id = 'edge-1' AND metric = 'Motor.RPM'"
        " ORDER BY received_at"
    )
    assert [r["value"] for r in rpm] == [1500.0, 1510.0]  # the alias resolved from the birth

    async def statuses() -> dict[str, str]:
        rows = await conn.fetch("SELECT device_id, status FROM devices")
        return {r["device_id"]: r["status"] for r in rows}

    await wait_until(lambda: _has(statuses, {"plug-1": "offline", "edge-1": "online"}), timeout=10)
    assert int(await conn.fetchval("SELECT count(*) FROM dead_letters")) == 0


async def _has(statuses: Any, wanted: dict[str, str]) -> bool:
    found = await statuses()
    return all(found.get(k) == v for k, v in wanted.items())


async def test_a_name_that_is_not_an_id_is_a_dead_letter_not_another_device(
    db: tuple[asyncpg.Connection, Topics], peer: MqttPeer
) -> None:
    conn, topics = db
    peer.publish(f"{topics.prefix}/tele/bad id!/SENSOR", orjson.dumps({"ENERGY": {"Power": 1}}))

    async def dead() -> bool:
        return int(await conn.fetchval("SELECT count(*) FROM dead_letters")) >= 1

    await wait_until(dead, timeout=20)
    row = await conn.fetchrow("SELECT reason, detail FROM dead_letters")
    assert row["reason"] == "invalid_device_id", row
    assert int(await conn.fetchval("SELECT count(*) FROM readings")) == 0


async def test_a_shared_ingest_shares_all_but_sparkplug(
    broker: BrokerInfo, database_url: str, topic_prefix: str
) -> None:
    """Sparkplug's state (births, aliases) needs every message in every ingest."""
    topics = Topics(topic_prefix)
    source = ConfiguredMappings(profiles="tasmota,sparkplug_b")
    async with running_ingest(
        broker.url, database_url, topics, mappings=source, shared_subscription=True
    ) as service:
        assert service.mappings is not None
        subscribed = service.mappings.subscribed
    assert f"{topic_prefix}/spBv1.0/#" in subscribed
    shared = [s for s in subscribed if s.startswith("$share/")]
    assert any(s.endswith(f"{topic_prefix}/tele/+/SENSOR") for s in shared), subscribed
    assert not any("spBv1.0" in s for s in shared), subscribed


async def test_a_mapping_removed_while_the_ingest_was_stopped_leaves_its_session(
    broker: BrokerInfo, database_url: str, topic_prefix: str, peer: MqttPeer
) -> None:
    """The ingest's broker session is persistent: without cleaning up, the subscription of a
    mapping removed while it was stopped would still deliver, as no_mapping dead letters."""
    topics = Topics(topic_prefix)
    client_id = f"ingest-stale-{topic_prefix}"
    async with running_ingest(
        broker.url,
        database_url,
        topics,
        mappings=ConfiguredMappings(profiles="tasmota,esphome"),
        client_id=client_id,
    ) as service:
        assert service.mappings is not None
        assert f"{topic_prefix}/tele/+/SENSOR" in service.mappings.subscribed
    async with running_ingest(
        broker.url,
        database_url,
        topics,
        mappings=ConfiguredMappings(profiles="esphome"),
        client_id=client_id,
    ):
        conn = await asyncpg.connect(database_url)
        try:
            peer.publish(f"{topics.prefix}/tele/plug-9/SENSOR", b'{"ENERGY": {"Power": 1}}')
            peer.publish(f"{topics.prefix}/node-9/sensor/t/state", b"20.5")  # then a barrier

            async def barrier() -> bool:
                return bool(await conn.fetchval("SELECT count(*) FROM readings"))

            await wait_until(barrier, timeout=20)
            dead = await conn.fetch("SELECT topic, reason FROM dead_letters")
            assert dead == [], [dict(r) for r in dead]
            held = await conn.fetch(
                "SELECT subscription FROM ingest_mapped_subscriptions WHERE client_id = $1",
                client_id,
            )
            assert sorted(r["subscription"] for r in held) == sorted(
                f"{topic_prefix}/{f}" for f in ("+/sensor/+/state", "+/status")
            )
        finally:
            await conn.close()
