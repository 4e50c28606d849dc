"""A broker restart, idle and under load: the ingest and the front reconnect and resubscribe on
their own, a WebSocket client stays connected and keeps receiving, nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.services import Mosquitto
from ingest.mqtt import MqttEndpoint
from tests.helpers import BrokerInfo, MqttPeer, wait_until
from tests.stack import Stack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
async def private_stack(
    private_broker: Mosquitto, database_url: str, topic_prefix: str
) -> AsyncIterator[Stack]:
    """The ingest and the front on the test's own mosquitto."""
    async with running_stack(private_broker.url, database_url, topic_prefix) as stack:
        yield stack


@pytest.mark.timeout(90)
async def test_broker_restart_under_ingest_and_front(
    database_url: str, private_broker: Mosquitto, private_stack: Stack
) -> None:
    url, topics = private_broker.url, private_stack.topics
    db = await asyncpg.connect(database_url)
    try:
        ws = await private_stack.client(private_stack.token(scope="telemetry:read", sub="a"))
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
        await asyncio.to_thread(private_broker.restart)  # same port, same persistence directory

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
        await db.close()


@pytest.mark.timeout(150)
async def test_graceful_broker_restart_under_load_loses_and_doubles_nothing(
    database_url: str, private_broker: Mosquitto, private_stack: Stack
) -> None:
    """Devices keep publishing at QoS 1 through a broker restart: every message the broker
    acknowledged is stored once, and a WebSocket client stays connected and keeps receiving."""
    url, topics = private_broker.url, private_stack.topics
    db = await asyncpg.connect(database_url)
    publishing = threading.Event()
    try:
        ws = await private_stack.client(private_stack.token(scope="telemetry:read", sub="a"))
        await ws.recv()
        await ws.send('{"type": "subscribe", "channel": "telemetry", "device_id": "ld-0"}')
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        await asyncio.sleep(0.5)  # the front's broker subscription is in place

        base = datetime.now(UTC) - timedelta(minutes=10)
        infos: list[tuple[int, Any]] = []
        peer = MqttPeer(url)
        pubacks: set[int] = set()  # mids; paho reports them also for queued-then-resent ones
        peer.client.on_publish = lambda _c, _u, mid, _rc, _p: pubacks.add(mid)

        def device_fleet() -> None:
            # ~400 messages/s from 4 devices, through the restart; paho queues while the
            # broker is away and resends when it is back
            for i in range(4000):
                body = orjson.dumps({"ts": (base + timedelta(milliseconds=i)).isoformat(), "v": i})
                infos.append(
                    (i, peer.client.publish(topics.device_telemetry(f"ld-{i % 4}"), body, qos=1))
                )
                if i == 1200:
                    publishing.set()
                time.sleep(0.0025)

        fleet = asyncio.create_task(asyncio.to_thread(device_fleet))
        await asyncio.to_thread(publishing.wait, 30)
        # graceful (SIGTERM, persistence saved), then the same port and persistence directory
        await asyncio.to_thread(private_broker.restart)
        await fleet

        # publishes made while the broker was away report "not connected" but stay queued
        # in paho and go out after the reconnect: wait for their PUBACKs
        async def all_acked() -> bool:
            return all(info.mid in pubacks for _, info in infos)

        with contextlib.suppress(AssertionError):
            await wait_until(all_acked, timeout=60, interval=0.2)
        acked = {i for i, info in infos if info.mid in pubacks}
        peer.close()
        assert len(acked) == 4000, f"{4000 - len(acked)} publishes never acknowledged"

        async def all_stored() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM readings")) >= len(acked)

        await wait_until(all_stored, timeout=60)
        values = [int(r["value"]) for r in await db.fetch("SELECT value FROM readings")]
        assert len(values) == len(set(values)) == len(acked) and set(values) == acked

        # The WebSocket client never disconnected and saw every ld-0 reading exactly once:
        # what the stream carried while the front was cut off from the broker was replayed
        # from storage by the front itself (Session._broker_link_restored).
        late = 3999 - (3999 % 4)  # the last value of device ld-0
        seen: list[int] = []
        replays = 0
        while late not in seen:
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            if msg["type"] == "telemetry_update":
                seen.append(int(msg["telemetry"]["v"]["value"]))
            replays += msg["type"] == "replay_complete"
        stored_ld0 = {v for v in values if v % 4 == 0}
        assert len(seen) == len(set(seen)), "a reading reached the client twice"
        assert set(seen) == stored_ld0, f"missed {sorted(stored_ld0 - set(seen))[:10]}"
        assert replays >= 1
        await ws.close()
    finally:
        publishing.set()
        await db.close()


@pytest.mark.timeout(90)
async def test_front_cut_off_from_the_broker_replays_what_it_missed(
    broker: BrokerInfo, database_url: str, topic_prefix: str
) -> None:
    """The front's own broker connection drops (here: another client takes over its client id)
    while the ingest keeps storing and streaming. The connected WebSocket client still sees
    every reading exactly once: the front replays the missed ones from storage."""
    fast = {"batch_max_wait_s": 0.005}
    async with running_stack(broker.url, database_url, topic_prefix, ingest_options=fast) as stack:
        topics = stack.topics
        assert stack.front is not None
        async with await stack.client(stack.token(scope="telemetry:read", sub="a")) as ws:
            await ws.recv()
            await ws.send('{"type": "subscribe", "channel": "telemetry", "device_id": "c1"}')
            assert orjson.loads(await ws.recv())["type"] == "subscribed"
            base = datetime.now(UTC) - timedelta(minutes=5)

            def reading(i: int) -> None:
                ts = (base + timedelta(milliseconds=i)).isoformat()
                stack.peer.publish(topics.device_telemetry("c1"), orjson.dumps({"ts": ts, "v": i}))

            for i in range(20):
                reading(i)
            # take over the front's client id: the broker disconnects the front, which
            # reconnects after its backoff; readings 20-59 are stored and streamed meanwhile
            hub = stack.front.hub
            impostor = paho.Client(CallbackAPIVersion.VERSION2, client_id=hub.client_id)
            ep = MqttEndpoint.from_url(broker.url)
            impostor.connect(ep.host, ep.port)
            impostor.loop_start()

            async def front_cut_off() -> bool:
                return not hub.connected.is_set()

            await wait_until(front_cut_off, timeout=10, interval=0.001)
            for i in range(20, 60):  # while the front is away (its reconnect backoff)
                reading(i)
            impostor.disconnect()
            impostor.loop_stop()

            async def front_back() -> bool:
                return hub.connected.is_set()

            await wait_until(front_back, timeout=20)
            for i in range(60, 80):
                reading(i)
            seen: list[int] = []
            replays = 0
            while 79 not in seen or len(set(seen)) < 80:
                msg = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
                if msg["type"] == "telemetry_update":
                    seen.append(int(msg["telemetry"]["v"]["value"]))
                replays += msg["type"] == "replay_complete"
            # a late replay must not bring anything again: drain what is still coming
            with contextlib.suppress(TimeoutError):
                while True:
                    msg = orjson.loads(await asyncio.wait_for(ws.recv(), 1.0))
                    if msg["type"] == "telemetry_update":
                        seen.append(int(msg["telemetry"]["v"]["value"]))
            assert sorted(seen) == list(range(80)), "a reading was missed or seen twice"
            assert replays >= 1, "the front never noticed it had been cut off"
