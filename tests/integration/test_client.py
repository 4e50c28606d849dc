"""bridge.client against the real stack: a private mosquitto, PostgreSQL, the ingest and the
front, with the front and then the broker restarted in the middle of a subscription."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.app import run_front
from bridge.auth import mint
from bridge.client import (
    AlertEvent,
    AuthError,
    BridgeClient,
    BridgeError,
    Subscription,
    TelemetryUpdate,
)
from bridge.config import Settings
from bridge.embedded import MosquittoProcess, free_port
from ingest.mqtt import MqttEndpoint
from ingest.service import IngestConfig, IngestService
from ingest.topics import Topics
from tests.helpers import MqttPeer, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SECRET = "client-test-secret-" + "c" * 40


@dataclass
class Rig:
    broker: MosquittoProcess
    mqtt_url: str
    database_url: str
    topics: Topics
    port: int
    front_stop: asyncio.Event = field(default_factory=asyncio.Event)
    front_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def token(self, scope: str, ttl_s: int = 600) -> str:
        return mint(key=SECRET, algorithm="HS256", sub="client-test", scopes=scope, ttl_s=ttl_s)

    async def start_front(self) -> None:
        settings = Settings(
            mqtt_url=self.mqtt_url,
            jwt_secret=SECRET,
            ws_port=self.port,
            mqtt_topic_prefix=self.topics.prefix,
            ws_new_connections_per_ip_per_min=1000,
        )
        self.front_stop = asyncio.Event()
        ready = asyncio.Event()
        self.front_task = asyncio.create_task(
            run_front(settings, self.mqtt_url, self.database_url, self.front_stop, ready)
        )
        await asyncio.wait_for(ready.wait(), 10)

    async def stop_front(self) -> None:
        self.front_stop.set()
        assert self.front_task is not None
        await asyncio.wait_for(self.front_task, 20)

    def publish(self, device: str, values: range, base: datetime) -> None:
        peer = MqttPeer(self.mqtt_url)
        try:
            for i in values:
                ts = (base + timedelta(milliseconds=i)).isoformat()
                peer.publish(self.topics.device_telemetry(device), orjson.dumps({"ts": ts, "v": i}))
        finally:
            peer.close()


@pytest.fixture
async def rig(database_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    broker = MosquittoProcess(tmp_path / "mosquitto", port=free_port())
    mqtt_url = broker.start()
    topics = Topics(f"cl{uuid.uuid4().hex[:6]}")
    ingest = IngestService(
        IngestConfig(
            mqtt=MqttEndpoint.from_url(mqtt_url),
            database_url=database_url,
            topics=topics,
            client_id=f"ingest-{uuid.uuid4().hex[:8]}",
            batch_max_wait_s=0.005,
            rules_reload_s=0.3,
        )
    )
    stop = asyncio.Event()
    ready = asyncio.Event()
    ingest_task = asyncio.create_task(ingest.run(stop, ready))
    rig = Rig(broker, mqtt_url, database_url, topics, free_port())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await rig.start_front()
        yield rig
    finally:
        rig.front_stop.set()
        stop.set()
        tasks = [t for t in (ingest_task, rig.front_task) if t is not None]
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        broker.stop()


async def _values(sub: Subscription, until: int, seen: list[int]) -> None:
    async with asyncio.timeout(60):
        async for update in sub:
            assert isinstance(update, TelemetryUpdate)
            seen.append(int(update.value))
            if update.value == until:
                return


@pytest.mark.timeout(120)
async def test_subscription_survives_front_and_broker_restarts_without_gap_or_duplicate(
    rig: Rig,
) -> None:
    base = datetime.now(UTC) - timedelta(minutes=5)
    seen: list[int] = []
    async with (
        BridgeClient(rig.url, rig.token("telemetry:read"), backoff_initial_s=0.05) as client,
        client.subscribe("telemetry", device_id="k1") as sub,
    ):
        await asyncio.to_thread(rig.publish, "k1", range(0, 50), base)
        await _values(sub, 49, seen)

        # the front goes away; readings keep being stored meanwhile
        await rig.stop_front()
        assert not client.connected
        await asyncio.to_thread(rig.publish, "k1", range(50, 100), base)
        await rig.start_front()  # same port: the client reconnects and resumes with `since`
        await asyncio.to_thread(rig.publish, "k1", range(100, 150), base)
        await _values(sub, 149, seen)
        assert client.connections == 2

        # the broker restarts under the front: the connection to the client stays up
        await asyncio.to_thread(rig.broker.stop)
        await asyncio.to_thread(rig.broker.start)
        await asyncio.to_thread(rig.publish, "k1", range(150, 200), base)
        await _values(sub, 199, seen)
        assert client.connections == 2

    assert len(seen) == len(set(seen)), "the caller saw a reading twice"
    assert sorted(seen) == list(range(200)), f"missed {sorted(set(range(200)) - set(seen))}"
    assert sub.replays >= 1


@pytest.mark.timeout(90)
async def test_query_command_and_alert_acknowledgement(rig: Rig) -> None:
    admin = rig.token("admin telemetry:read alerts:read alerts:write commands:write")
    base = datetime.now(UTC) - timedelta(minutes=1)
    async with BridgeClient(rig.url, admin) as client:
        await asyncio.to_thread(rig.publish, "q1", range(20), base)

        async def stored() -> bool:
            result = await client.query(device_id="q1", metric="v", **{"from": "-1h"})
            return sum(len(s["points"]) for s in result["series"]) == 20

        await wait_until(stored)

        created = await client.request(
            {
                "type": "create_rule",
                "rule": {"rule_id": "hot", "metric": "v", "condition": "gt", "threshold": 100},
            }
        )
        assert created["type"] == "rule_created"
        async with client.subscribe("alerts", device_id="q1") as alerts:
            alert: AlertEvent | None = None
            i = 1000
            while alert is None:  # the ingest picks the new rule up within its reload period
                await asyncio.to_thread(rig.publish, "q1", range(i, i + 1), base)
                i += 1
                try:
                    update = await asyncio.wait_for(anext(alerts), 1)
                except TimeoutError:
                    continue
                assert isinstance(update, AlertEvent)
                alert = update
            assert alert.state == "active" and alert.device_id == "q1"
            acked = await client.ack_alert(alert.alert_id)
            assert acked["type"] == "alert_acknowledged"
            update = await asyncio.wait_for(anext(alerts), 10)
            assert isinstance(update, AlertEvent) and update.state == "acknowledged"

        with pytest.raises(BridgeError) as missing:
            await client.ack_alert("al_0000000000000000")
        assert missing.value.code == 404

        # a command answered by a device listening on its command topic
        peer = MqttPeer(rig.mqtt_url)
        command_filter = rig.topics.device_command("pump-1", "x").rsplit("/", 1)[0] + "/+"
        peer.subscribe(command_filter)
        progress: list[dict[str, Any]] = []

        async def device() -> None:
            async def asked() -> bool:
                return bool(peer.messages(command_filter[:-1]))

            await wait_until(asked)
            topic = peer.messages(command_filter[:-1])[0].topic + "/result"
            peer.publish(topic, b'{"status": "running", "progress": 50, "done": false}')
            peer.publish(topic, b'{"status": "ok", "output": "done", "done": true}')

        try:
            answer, _ = await asyncio.gather(
                client.command("pump-1", "reboot", {"delay": 1}, on_progress=progress.append),
                device(),
            )
        finally:
            peer.close()
        assert answer["status"] == "success" and answer["data"]["output"] == "done"
        assert [p["progress"] for p in progress] == [50]

        with pytest.raises(BridgeError) as timed_out:
            await client.command("pump-2", "ping", timeout_s=0.5)
        assert timed_out.value.code == 504


async def test_bad_token_and_token_refresh(rig: Rig) -> None:
    with pytest.raises(AuthError):
        async with BridgeClient(rig.url, "not-a-jwt"):
            pass

    # tokens that live 3 s: the client sends fresh ones on the open connection, so the
    # server never closes it with 4001 and the subscription keeps delivering
    issued: list[str] = []

    def fresh() -> str:
        issued.append(rig.token("telemetry:read", ttl_s=3))
        return issued[-1]

    base = datetime.now(UTC) - timedelta(minutes=1)
    async with (
        BridgeClient(rig.url, token_provider=fresh) as client,
        client.subscribe("telemetry", device_id="t1") as sub,
    ):

        async def refreshed_twice() -> bool:
            return len(issued) >= 3

        await wait_until(refreshed_twice, timeout=15, interval=0.2)
        await asyncio.to_thread(rig.publish, "t1", range(1), base)
        update = await asyncio.wait_for(anext(sub), 10)
        assert isinstance(update, TelemetryUpdate) and update.value == 0
        assert client.connections == 1
