"""Device status from readings, from the device's own status topic (Last Will), and from silence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from ingest.topics import Topics
from storage.devices import mark_silent_offline
from tests.helpers import BrokerInfo, MqttPeer, running_ingest, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def running(
    broker: BrokerInfo, database_url: str, topic_prefix: str
) -> AsyncIterator[tuple[Topics, MqttPeer, asyncpg.Connection]]:
    topics = Topics(topic_prefix)
    async with running_ingest(broker.url, database_url, topics, batch_max_wait_s=0.01):
        peer = MqttPeer(broker.url)
        peer.subscribe(f"{topic_prefix}/status/+")
        db = await asyncpg.connect(database_url)
        try:
            yield topics, peer, db
        finally:
            peer.close()
            await db.close()


def statuses(peer: MqttPeer, topics: Topics, device: str) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in peer.messages(topics.status(device))]


async def test_first_reading_then_last_will_then_back_online(
    running: tuple[Topics, MqttPeer, asyncpg.Connection],
) -> None:
    topics, peer, db = running
    peer.publish(topics.device_telemetry("st-1"), b'{"t": 1}')

    async def count(n: int) -> bool:
        return len(statuses(peer, topics, "st-1")) >= n

    await wait_until(lambda: count(1))
    first = statuses(peer, topics, "st-1")[0]
    assert (first["old_status"], first["new_status"], first["reason"]) == (
        None,
        "online",
        "first reading",
    )

    # the device's Last Will (or an explicit status) as devices send it: a bare word, retained
    peer.publish(topics.device_status("st-1"), b"offline", retain=True)
    await wait_until(lambda: count(2))
    second = statuses(peer, topics, "st-1")[1]
    assert (second["old_status"], second["new_status"]) == ("online", "offline")

    peer.publish(topics.device_telemetry("st-1"), b'{"t": 2}')
    await wait_until(lambda: count(3))
    third = statuses(peer, topics, "st-1")[2]
    assert (third["old_status"], third["new_status"], third["reason"]) == (
        "offline",
        "online",
        "data received",
    )

    rows = await db.fetch(
        "SELECT old_status, new_status FROM device_status_events "
        "WHERE device_id = 'st-1' ORDER BY id"
    )
    assert [(r["old_status"], r["new_status"]) for r in rows] == [
        (None, "online"),
        ("online", "offline"),
        ("offline", "online"),
    ]
    assert await db.fetchval("SELECT status FROM devices WHERE device_id = 'st-1'") == "online"
    peer.publish(topics.device_status("st-1"), b"", retain=True)  # clear the retained will


async def test_json_status_with_reason_and_bad_status_is_dead_lettered(
    running: tuple[Topics, MqttPeer, asyncpg.Connection],
) -> None:
    topics, peer, db = running
    peer.publish(topics.device_status("st-2"), b'{"status": "warning", "reason": "battery low"}')
    peer.publish(topics.device_status("st-2"), b'{"status": "sleepy"}')

    async def done() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM dead_letters")) and bool(
            statuses(peer, topics, "st-2")
        )

    await wait_until(done)
    [change] = statuses(peer, topics, "st-2")
    assert (change["new_status"], change["reason"]) == ("warning", "battery low")
    assert await db.fetchval("SELECT reason FROM dead_letters") == "validation_error"


async def test_silent_devices_go_offline_once(
    running: tuple[Topics, MqttPeer, asyncpg.Connection],
) -> None:
    topics, peer, db = running
    peer.publish(topics.device_telemetry("quiet-1"), b'{"t": 1}')
    peer.publish(topics.device_telemetry("chatty-1"), b'{"t": 1}')

    async def both() -> bool:
        return int(await db.fetchval("SELECT count(*) FROM devices")) == 2

    await wait_until(both)
    await db.execute(
        "UPDATE devices SET last_seen = now() - interval '10 minutes' WHERE device_id = 'quiet-1'"
    )
    changes = await mark_silent_offline(db, default_offline_after_s=300)
    assert [(c.device_id, c.new_status) for c in changes] == [("quiet-1", "offline")]
    assert await mark_silent_offline(db, default_offline_after_s=300) == []  # reported once
    # a per-device timeout overrides the default
    await db.execute(
        "UPDATE devices SET offline_after_s = 1, last_seen = now() - interval '2 s' "
        "WHERE device_id = 'chatty-1'"
    )
    assert [c.device_id for c in await mark_silent_offline(db, 300)] == ["chatty-1"]
