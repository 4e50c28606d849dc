"""Receiving messages leaves no reference cycles behind (real broker, both MQTT clients).

Cyclic garbage is freed only by the collector, whose pauses showed up as the front's latency
spikes; paho 2.x left six cyclic objects per received message (its recursive topic matcher).
Both clients now run on ingest/mqtt.py, whose received message is one slotted object.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.hub import Hub
from ingest.mqtt import AsyncMqtt, MqttEndpoint, set_nodelay
from ingest.topics import Topics
from tests.helpers import BrokerInfo, wait_until

MESSAGES = 300


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def _publish(url: str, topic: str, n: int) -> None:
    ep = MqttEndpoint.from_url(url)
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect(ep.host, ep.port)
    set_nodelay(pub)
    pub.loop_start()
    for i in range(n):
        pub.publish(topic, b'{"device_id": "d1", "metric": "v", "value": %d}' % i, qos=1)
    pub.loop_stop()  # only after the loop thread has sent everything queued
    pub.disconnect()


async def _until(predicate: Any) -> None:
    async def check() -> bool:
        return bool(predicate())

    await wait_until(check)


async def test_ingest_client_receives_without_cycles(
    broker: BrokerInfo, collector_off: None
) -> None:
    topic = f"gc-{uuid.uuid4().hex[:8]}/devices/d1/telemetry"
    got: list[Any] = []
    client = AsyncMqtt(
        MqttEndpoint.from_url(broker.url),
        f"gc-{uuid.uuid4().hex[:8]}",
        on_message=got.append,
        subscriptions=[(topic, 1)],
    )
    await client.start()
    try:
        gc.collect()
        await asyncio.to_thread(_publish, broker.url, topic, MESSAGES)
        await _until(lambda: len(got) >= MESSAGES)
        got.clear()
        unreachable = gc.collect()
    finally:
        await client.stop()
    # a cycle per message would be >= 6 x MESSAGES objects; allow incidental ones
    assert unreachable < MESSAGES, unreachable


async def test_front_hub_receives_without_cycles(broker: BrokerInfo, collector_off: None) -> None:
    prefix = f"gc{uuid.uuid4().hex[:8]}"
    topics = Topics(prefix)
    hub = Hub(MqttEndpoint.from_url(broker.url), topics, f"front-{uuid.uuid4().hex[:8]}")
    task = asyncio.create_task(hub.run())
    seen = 0

    def listener(*_args: Any) -> None:
        nonlocal seen
        seen += 1

    try:
        await asyncio.wait_for(hub.connected.wait(), 10)
        await hub.add(topics.telemetry_filter(None, None), listener)
        gc.collect()
        await asyncio.to_thread(_publish, broker.url, topics.telemetry("d1", "v"), MESSAGES)
        await _until(lambda: seen >= MESSAGES)
        unreachable = gc.collect()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert unreachable < MESSAGES, unreachable
