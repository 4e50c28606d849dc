"""A garbage message a device publishes *retained* on its own topic is dead-lettered once.

The broker hands a retained message to every new subscription; an ingest that subscribed again
after each reconnect (and a restarted one) dead-lettered the same garbage over and over, and
stored a retained reading without ``ts`` again under a new time. Real mosquitto, real
reconnects: the ingest's socket is cut, the ingest is restarted with its persistent session,
the broker's copy of the session is taken away, and the same on MQTT 3.1.1.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from ingest.service import IngestService
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, running_ingest, wait_until

pytestmark = pytest.mark.integration

GARBAGE = b"\x00\x01 not telemetry"
READING = b'{"t": 21.5}'  # no ts: stored again it would be a second reading


class Probe:
    """Publishes a fresh live reading and waits until it is stored: whatever the broker sent
    the ingest before it (retained copies come right after the SUBACK) was handled by then."""

    def __init__(self, db: asyncpg.Connection, peer: MqttPeer, topics: Topics) -> None:
        self.db, self.peer, self.topics, self.n = db, peer, topics, 0

    async def sync(self) -> None:
        self.n += 1
        self.peer.publish(self.topics.device_telemetry("probe"), b'{"n": %d}' % self.n)

        async def stored() -> bool:
            count = await self.db.fetchval("SELECT count(*) FROM readings WHERE device_id='probe'")
            return int(count) >= self.n

        await wait_until(stored, timeout=20)

    async def counts(self) -> tuple[int, int]:
        dead = await self.db.fetchval("SELECT count(*) FROM dead_letters")
        stored = await self.db.fetchval("SELECT count(*) FROM readings WHERE device_id = 'ret-2'")
        return int(dead), int(stored)


async def cut_connection(service: IngestService) -> None:
    """Drop the ingest's TCP connection as a network failure would, and wait for it to be back
    (subscribed again) on a new connection."""
    mqtt = service._mqtt
    assert mqtt is not None
    generation = mqtt.generation
    sock = mqtt.socket()
    assert sock is not None  # asyncio hands out a wrapper that can still shut down
    sock.shutdown(socket.SHUT_RDWR)

    async def back() -> bool:
        return mqtt.generation > generation and mqtt.connected.is_set()

    await wait_until(back, timeout=20)
    await asyncio.sleep(0.3)  # let the SUBACK and anything the broker sends with it arrive


def publish_retained(peer: MqttPeer, topics: Topics) -> None:
    peer.publish(topics.device_telemetry("ret-1"), GARBAGE, retain=True)
    peer.publish(topics.device_telemetry("ret-2"), READING, retain=True)


@pytest.mark.timeout(120)
async def test_retained_garbage_is_dead_lettered_once_across_reconnects_and_restarts(
    broker: BrokerInfo, database_url: str, topic_prefix: str, db: asyncpg.Connection, peer: MqttPeer
) -> None:
    topics = Topics(topic_prefix)
    probe = Probe(db, peer, topics)
    client_id = f"retained-{uuid.uuid4().hex[:8]}"
    publish_retained(peer, topics)  # before the ingest's first subscription
    async with running_ingest(broker.url, database_url, topics, client_id=client_id) as service:
        await probe.sync()
        assert await probe.counts() == (1, 1)  # handled once, as any message
        for _ in range(2):
            await cut_connection(service)
            await probe.sync()
            assert await probe.counts() == (1, 1)
    # a restart with the same persistent session
    async with running_ingest(broker.url, database_url, topics, client_id=client_id) as service:
        await probe.sync()
        assert await probe.counts() == (1, 1)
        await cut_connection(service)
        await probe.sync()
        assert await probe.counts() == (1, 1)
    dead = await db.fetch("SELECT device_id, reason, payload FROM dead_letters")
    assert [(d["device_id"], d["reason"], bytes(d["payload"])) for d in dead] == [
        ("ret-1", "invalid_json", GARBAGE)
    ]


@pytest.mark.timeout(120)
@pytest.mark.needs_mosquitto("MQTT 5: over 3.1.1 the garbage is dead-lettered twice")
async def test_once_even_when_the_broker_lost_the_session(
    broker: BrokerInfo, database_url: str, topic_prefix: str, db: asyncpg.Connection, peer: MqttPeer
) -> None:
    # Another client connecting with the ingest's id and a clean start destroys the ingest's
    # session at the broker; the ingest then subscribes anew and the broker sends the retained
    # messages again. The ingest remembers what it handled.
    topics = Topics(topic_prefix)
    probe = Probe(db, peer, topics)
    client_id = f"retained-{uuid.uuid4().hex[:8]}"
    async with running_ingest(broker.url, database_url, topics, client_id=client_id) as service:
        publish_retained(peer, topics)  # while subscribed: delivered live first
        await probe.sync()
        assert await probe.counts() == (1, 1)
        mqtt = service._mqtt
        assert mqtt is not None
        generation = mqtt.generation
        impostor = MqttPeer(broker.url, client_id=client_id)  # clean start: session gone
        impostor.close()

        async def back() -> bool:
            return mqtt.generation > generation and mqtt.connected.is_set()

        await wait_until(back, timeout=20)
        await asyncio.sleep(0.3)
        await probe.sync()
        # The broker did send both again. The garbage is not dead-lettered twice; the reading
        # is handled again (a retained reading is idempotent when it has a ts: README)
        dead, _ = await probe.counts()
        assert dead == 1
        assert service.stats.retained_skipped >= 1


@pytest.mark.timeout(120)
@pytest.mark.needs_mosquitto("retained copies on each resubscription; iotcore sends none")
async def test_once_across_reconnects_on_mqtt_3_1_1(
    broker: BrokerInfo, database_url: str, topic_prefix: str, db: asyncpg.Connection, peer: MqttPeer
) -> None:
    # MQTT 3.1.1 has no retain handling: the broker resends retained messages on every
    # SUBSCRIBE, so here only the ingest's own memory keeps them from being handled again.
    topics = Topics(topic_prefix)
    probe = Probe(db, peer, topics)
    publish_retained(peer, topics)
    url = broker.url_for("3.1.1")
    async with running_ingest(url, database_url, topics) as service:
        await probe.sync()
        assert await probe.counts() == (1, 1)
        for _ in range(2):
            await cut_connection(service)
            await probe.sync()
            dead, _ = await probe.counts()
            assert dead == 1
        assert service.stats.retained_skipped >= 2


@pytest.mark.timeout(60)
async def test_a_new_retained_message_on_the_topic_is_handled_even_if_seen_before(
    broker: BrokerInfo, database_url: str, topic_prefix: str, db: asyncpg.Connection, peer: MqttPeer
) -> None:
    # What a device does with its Last Will: retained online, offline, online again. Each is
    # a new retained message on the topic and must change the stored status.
    topics = Topics(topic_prefix)
    topic = topics.device_status("lwt-1")

    def status_is(expected: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            row = await db.fetchval("SELECT status FROM devices WHERE device_id = 'lwt-1'")
            return bool(row == expected)

        return check

    async with running_ingest(broker.url, database_url, topics):
        for status in ("online", "offline", "online", "offline"):
            peer.publish(topic, status.encode(), retain=True)
            await wait_until(status_is(status), timeout=20)


@pytest.mark.timeout(60)
@pytest.mark.needs_mosquitto("MQTT 5: over 3.1.1 the garbage is dead-lettered twice")
async def test_repeated_live_retained_readings_are_all_stored(
    broker: BrokerInfo, database_url: str, topic_prefix: str, db: asyncpg.Connection, peer: MqttPeer
) -> None:
    # A thermostat publishing the same value retained, without ts, once a minute: each is a
    # reading. Only dead letters are ever held back for being a copy.
    topics = Topics(topic_prefix)

    def stored(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            count = await db.fetchval("SELECT count(*) FROM readings WHERE device_id='thermo-1'")
            return int(count) >= n

        return check

    async with running_ingest(broker.url, database_url, topics):
        for n in range(1, 4):
            peer.publish(topics.device_telemetry("thermo-1"), READING, retain=True)
            await wait_until(stored(n), timeout=20)
        for _ in range(2):
            peer.publish(topics.device_telemetry("thermo-1"), GARBAGE, retain=True)
        peer.publish(topics.device_telemetry("thermo-1"), READING, retain=True)
        await wait_until(stored(4), timeout=20)
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 1
