"""Each reading reaches each subscription exactly once, whatever else is subscribed.

The front holds one broker connection for all its clients. When their filters overlap (all
telemetry and one device's), the broker may send one copy of a message per matching
subscription of that connection: mosquitto does over MQTT 5, the iotcore fallback broker over
MQTT 3.1.1. Real broker, real ingest, real front; every dialect; also while other clients'
overlapping subscriptions come and go.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from bridge.embedded import IotcoreBroker, free_port
from tests.helpers import BrokerInfo
from tests.integration.frontkit import Stack, recv, recv_type, stack_fixture

pytestmark = pytest.mark.integration

N = 30  # readings per device
METRICS = ("temperature", "humidity")


@pytest.fixture(params=["mosquitto-5", "mosquitto-3.1.1", "iotcore-3.1.1"])
async def any_stack(
    request: pytest.FixtureRequest,
    broker: BrokerInfo,
    database_url: str,
    topic_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    """The front and the ingest on mosquitto over MQTT 5 (the default), on mosquitto over
    MQTT 3.1.1, and on the fallback broker `up` uses when mosquitto is missing (3.1.1)."""
    fallback = None
    if request.param.startswith("mosquitto") and broker.kind == "iotcore":
        pytest.skip("needs mosquitto: not installed (the iotcore-3.1.1 case runs)")
    if request.param == "mosquitto-5":
        info = broker
    elif request.param == "mosquitto-3.1.1":
        info = BrokerInfo(url=broker.url_for("3.1.1"), process=None)
    else:
        pytest.importorskip("iotcore", reason="the iotcore fallback broker is not installed")
        fallback = IotcoreBroker(tmp_path / "iotcore", port=free_port())
        info = BrokerInfo(url=fallback.start(), process=None)
    try:
        async for stack in stack_fixture(info, database_url, topic_prefix):
            yield stack
    finally:
        if fallback is not None:
            fallback.stop()


class Client:
    """A WebSocket client that records every frame it gets once it has subscribed."""

    def __init__(self, name: str, ws: ClientConnection) -> None:
        self.name, self.ws = name, ws
        self.frames: list[dict[str, Any]] = []
        self.ids: dict[str, str] = {}  # subscription label -> subscription_id
        self._task: asyncio.Task[None] | None = None

    async def subscribe(self, label: str, msg: dict[str, Any], reply: str) -> dict[str, Any]:
        await self.ws.send(orjson.dumps(msg).decode())
        answer = await recv_type(self.ws, reply)
        sub_id = answer.get("subscription_id") or answer.get("subscriptionId")
        if sub_id:
            self.ids[label] = sub_id
        return answer

    async def unsubscribe(self, label: str) -> None:
        msg = {"type": "unsubscribe", "subscription_id": self.ids.pop(label)}
        await self.ws.send(orjson.dumps(msg).decode())

    def start(self) -> None:
        async def read() -> None:
            async for raw in self.ws:
                self.frames.append(orjson.loads(raw))

        self._task = asyncio.create_task(read())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.ws.close()


async def connect(stack: Stack, name: str, **token: Any) -> Client:
    ws = await stack.client(stack.token(sub=name, **token))
    assert (await recv(ws))["type"] == "connected"
    return Client(name, ws)


def telemetry_keys(client: Client) -> Counter[tuple[Any, ...]]:
    """One key per delivered reading: who it was for, device, metric, reading time."""
    keys: Counter[tuple[Any, ...]] = Counter()
    for f in client.frames:
        if f["type"] == "telemetry_update":
            for metric, reading in f["telemetry"].items():
                keys[(f["subscription_id"], f["device_id"], metric, reading["timestamp"])] += 1
        elif f["type"] == "event":
            d = f["data"]
            if "metric" in d:
                label = f.get("topic") or f.get("eventType")
                keys[(label, d["device_id"], d["metric"], d["ts"])] += 1
        elif f["type"] == "metrics":
            for metric in METRICS:
                if metric in f:
                    keys[("metrics", f["host"], metric, f[metric])] += 1
    return keys


def reading_ts(i: int, base: datetime) -> str:
    return (base + timedelta(seconds=i)).isoformat()


async def wait_for(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return  # the assertions that follow say what is missing
        await asyncio.sleep(0.05)


async def test_each_subscription_gets_each_reading_once(any_stack: Stack) -> None:
    stack = any_stack
    names = ("a", "b", "c", "d", "e", "f")
    clients = {n: await connect(stack, n) for n in names}
    a, b, c, d, e, f = (clients[n] for n in names)
    try:
        await a.subscribe("all", {"type": "subscribe", "channel": "telemetry"}, "subscribed")
        await b.subscribe(
            "d1", {"type": "subscribe", "channel": "telemetry", "device_id": "d1"}, "subscribed"
        )
        # one client, two overlapping subscriptions: each gets each reading, under its own id
        await c.subscribe("all", {"type": "subscribe", "channel": "telemetry"}, "subscribed")
        await c.subscribe(
            "d1", {"type": "subscribe", "channel": "telemetry", "device_id": "d1"}, "subscribed"
        )
        assert c.ids["all"] != c.ids["d1"]
        await d.subscribe(
            "topics", {"type": "subscribe", "topics": ["telemetry"]}, "subscription_confirmed"
        )
        await e.subscribe(
            "events",
            {"type": "subscribe", "events": ["telemetry.updated"], "filters": {"agentId": "d1"}},
            "subscribed",
        )
        await f.subscribe(
            "metrics",
            {"type": "subscribe-metrics", "host": "d1", "application": "Anvil"},
            "subscribed",
        )
        for client in clients.values():
            client.start()

        base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        for i in range(N):
            for device in ("d1", "d2"):
                payload = {"ts": reading_ts(i, base), "temperature": i, "humidity": i + 0.5}
                stack.peer.publish(stack.topics.device_telemetry(device), orjson.dumps(payload))
            await asyncio.sleep(0.01)

        def stored_ts(device: str) -> set[str]:  # the reading times, as the stream says them
            return {k[3] for k in telemetry_keys(a) if k[1] == device}

        def expected() -> dict[str, set[tuple[Any, ...]]]:
            ts = {dev: stored_ts(dev) for dev in ("d1", "d2")}

            def each(label: str, devices: tuple[str, ...]) -> set[tuple[Any, ...]]:
                return {(label, dev, m, t) for dev in devices for m in METRICS for t in ts[dev]}

            both = ("d1", "d2")
            return {
                "a": each(a.ids["all"], both),
                "b": each(b.ids["d1"], ("d1",)),
                "c": each(c.ids["all"], both) | each(c.ids["d1"], ("d1",)),
                "d": each("telemetry", both),
                "e": each("telemetry.updated", ("d1",)),
                "f": {
                    ("metrics", "d1", m, v)
                    for i in range(N)
                    for m, v in (("temperature", i), ("humidity", i + 0.5))
                },
            }

        def complete() -> bool:
            return all(len(stored_ts(dev)) == N for dev in ("d1", "d2")) and all(
                set(telemetry_keys(clients[n])) >= keys for n, keys in expected().items()
            )

        await wait_for(complete)
        await asyncio.sleep(0.5)  # any second copy would be right behind the first
        assert len(stored_ts("d1")) == N and len(stored_ts("d2")) == N
        for name, keys in expected().items():
            got = telemetry_keys(clients[name])
            doubled = {k: n for k, n in got.items() if n > 1}
            assert not doubled, (name, sorted(doubled.items())[:5], len(doubled))
            assert set(got) == keys, (name, sorted(set(got) ^ keys)[:5])
    finally:
        for client in clients.values():
            await client.close()


async def test_alerts_and_device_status_reach_each_subscription_once(stack: Stack) -> None:
    admin = await connect(stack, "root", scope="admin")
    a, b = await connect(stack, "a"), await connect(stack, "b")
    try:
        rule = {
            "rule_id": "hot",
            "metric": "temperature",
            "condition": "gt",
            "threshold": 50,
            "clear_threshold": 45,
            "severity": "high",
            "devices": ["d1", "d2"],
        }
        await admin.subscribe("rule", {"type": "create_rule", "rule": rule}, "rule_created")
        await admin.subscribe("alerts", {"type": "subscribe", "channel": "alerts"}, "subscribed")
        # the ingest reloads rules every 0.5 s in this stack: wait until this one is live
        for i in itertools.count():
            assert i < 40, "the rule never fired"
            stack.reading("warm-up", temperature=40.0)
            stack.reading("d2", temperature=60.0)
            with contextlib.suppress(TimeoutError):
                await recv_type(admin.ws, "alert", timeout=0.5)
                break
        stack.reading("d2", temperature=40.0)  # cleared before counting starts

        await a.subscribe("alerts", {"type": "subscribe", "channel": "alerts"}, "subscribed")
        await a.subscribe("devices", {"type": "subscribe", "channel": "devices"}, "subscribed")
        await b.subscribe(
            "alerts", {"type": "subscribe", "channel": "alerts", "device_id": "d1"}, "subscribed"
        )
        await b.subscribe(
            "devices", {"type": "subscribe", "channel": "devices", "device_id": "d1"}, "subscribed"
        )
        a.start()
        b.start()
        for _ in range(3):  # an alert raised and cleared, three times, on each device
            for value in (60.0, 40.0):
                for device in ("d1", "d2"):
                    stack.reading(device, temperature=value)
                await asyncio.sleep(0.05)
        for status in ("offline", "online", "offline"):  # the devices' own status reports
            for device in ("d1", "d3"):
                stack.peer.publish(stack.topics.device_status(device), status.encode())
            await asyncio.sleep(0.05)

        def alerts(client: Client, device: str) -> list[tuple[Any, ...]]:
            return [
                (f["alert_id"], f["state"], f["updated_at"])
                for f in client.frames
                if f["type"] == "alert" and f["device_id"] == device
            ]

        def statuses(client: Client, device: str) -> list[tuple[Any, ...]]:
            return [
                (f["old_status"], f["new_status"], f["received_at"])
                for f in client.frames
                if f["type"] == "device_status_update" and f["device_id"] == device
            ]

        await wait_for(
            lambda: (
                len(alerts(a, "d1")) >= 6
                and len(alerts(a, "d2")) >= 6
                and len(statuses(a, "d1")) >= 3
                and len(statuses(a, "d3")) >= 3
                and len(alerts(b, "d1")) >= len(alerts(a, "d1"))
                and len(statuses(b, "d1")) >= len(statuses(a, "d1"))
            )
        )
        await asyncio.sleep(0.5)
        for client in (a, b):
            for frames in (alerts(client, "d1"), statuses(client, "d1")):
                assert len(frames) == len(set(frames)), (client.name, frames)
        for frames in (alerts(a, "d2"), statuses(a, "d3")):
            assert len(frames) == len(set(frames)), frames
        assert len(alerts(a, "d1")) >= 6 and len(statuses(a, "d1")) >= 3
        assert alerts(b, "d1") == alerts(a, "d1")  # the same events, once each, in order
        assert statuses(b, "d1") == statuses(a, "d1")
        assert not alerts(b, "d2") and not statuses(b, "d3")
    finally:
        for client in (admin, a, b):
            await client.close()


async def test_once_each_while_overlapping_subscriptions_come_and_go(any_stack: Stack) -> None:
    """A steady subscriber of one device (with a second, narrower subscription of its own),
    while other clients keep taking and dropping subscriptions that overlap it: all telemetry,
    and one metric of every device. Over MQTT 5 each of those is a broker subscription of its
    own; over MQTT 3.1.1 each change replaces the broker's filters (telemetry/d1/+ <->
    telemetry/+/+), and a message routed while both are held comes twice from the broker."""
    stack = any_stack
    steady = await connect(stack, "steady")
    churn = [await connect(stack, f"churn{i}") for i in range(2)]
    try:
        await steady.subscribe(
            "d1", {"type": "subscribe", "channel": "telemetry", "device_id": "d1"}, "subscribed"
        )
        await steady.subscribe(
            "hum",
            {
                "type": "subscribe",
                "channel": "telemetry",
                "device_id": "d1",
                "filters": {"metrics": ["humidity"]},
            },
            "subscribed",
        )
        steady.start()
        stop = asyncio.Event()

        async def come_and_go(client: Client, msg: dict[str, Any]) -> int:
            rounds = 0
            while not stop.is_set():
                await client.subscribe("x", msg, "subscribed")
                await asyncio.sleep(0.02)
                await client.unsubscribe("x")
                await recv_type(client.ws, "unsubscribed")
                await asyncio.sleep(0.02)
                rounds += 1
            return rounds

        churning = [
            asyncio.create_task(
                come_and_go(churn[0], {"type": "subscribe", "channel": "telemetry"})
            ),
            asyncio.create_task(
                come_and_go(
                    churn[1],
                    {
                        "type": "subscribe",
                        "channel": "telemetry",
                        "filters": {"metrics": ["temperature"]},
                    },
                )
            ),
        ]
        base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
        n = 4 * N
        for i in range(n):
            payload = {"ts": reading_ts(i, base), "temperature": i, "humidity": i + 0.5}
            stack.peer.publish(stack.topics.device_telemetry("d1"), orjson.dumps(payload))
            await asyncio.sleep(0.005)
        stop.set()
        rounds = await asyncio.gather(*churning)
        assert all(r > 3 for r in rounds), rounds

        def got() -> Counter[tuple[Any, ...]]:
            return telemetry_keys(steady)

        def times() -> set[str]:
            return {k[3] for k in got()}

        def want() -> set[tuple[Any, ...]]:
            d1, hum = steady.ids["d1"], steady.ids["hum"]
            return {
                key
                for t in times()
                for key in (
                    (d1, "d1", "temperature", t),
                    (d1, "d1", "humidity", t),
                    (hum, "d1", "humidity", t),
                )
            }

        await wait_for(lambda: len(times()) >= n and set(got()) >= want())
        await asyncio.sleep(0.5)
        keys = got()
        assert len(times()) == n  # nothing lost
        doubled = {k: c for k, c in keys.items() if c > 1}
        assert not doubled, sorted(doubled.items())[:5]
        assert set(keys) == want()
    finally:
        for client in (steady, *churn):
            await client.close()
