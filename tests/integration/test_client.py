"""bridge.client against the real stack: a private mosquitto, PostgreSQL, the ingest and the
front, with the front and then the broker restarted in the middle of a subscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from bench.services import Mosquitto
from bridge.client import (
    AlertEvent,
    AuthError,
    BridgeClient,
    BridgeError,
    Subscription,
    TelemetryUpdate,
)
from tests.helpers import MqttPeer, wait_until
from tests.stack import Stack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Rig:
    """The stack on a mosquitto of the test's own: one test restarts both."""

    broker: Mosquitto
    stack: Stack

    @property
    def url(self) -> str:
        return f"{self.stack.url}/ws"

    def token(self, scope: str, ttl_s: int = 600) -> str:
        return self.stack.token(scope, sub="client-test", ttl_s=ttl_s)

    def publish(self, device: str, values: range, base: datetime) -> None:
        peer = MqttPeer(self.broker.url)
        try:
            for i in values:
                ts = (base + timedelta(milliseconds=i)).isoformat()
                topic = self.stack.topics.device_telemetry(device)
                peer.publish(topic, orjson.dumps({"ts": ts, "v": i}))
        finally:
            peer.close()


@pytest.fixture
async def rig(
    private_broker: Mosquitto, database_url: str, topic_prefix: str
) -> AsyncIterator[Rig]:
    fast = {"batch_max_wait_s": 0.005, "rules_reload_s": 0.3}
    async with running_stack(
        private_broker.url, database_url, topic_prefix, ingest_options=fast
    ) as stack:
        yield Rig(private_broker, stack)


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
        await rig.stack.stop_front()
        assert not client.connected
        await asyncio.to_thread(rig.publish, "k1", range(50, 100), base)
        await rig.stack.start_front()  # same port: the client reconnects and resumes with `since`
        await asyncio.to_thread(rig.publish, "k1", range(100, 150), base)
        await _values(sub, 149, seen)
        assert client.connections == 2

        # the broker restarts under the front: the connection to the client stays up
        await asyncio.to_thread(rig.broker.restart)
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
        peer = MqttPeer(rig.broker.url)
        command_filter = rig.stack.topics.device_command("pump-1", "x").rsplit("/", 1)[0] + "/+"
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
