"""Receive rate of the MQTT clients the ingest could use, measured side by side.

    .venv/bin/python -m bench.mqtt_clients [--messages 100000] [--repeat 3]

For each client a backlog of QoS 1 messages (~90-byte JSON payloads) is queued at a private
mosquitto for its persistent session, then the client connects and drains it; we report
messages/s (median of --repeat runs). The ingest needs to acknowledge after commit, which
aiomqtt does not offer; the interesting number is what our own client (ingest/mqtt.py, manual
ack per message) does compared with aiomqtt and with paho's own network thread.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.services import mosquitto
from ingest.mqtt import AsyncMqtt, Message, MqttEndpoint

PAYLOAD = b'{"ts": "2026-11-22T00:00:00.000Z", "values": {"temperature": 21.5, "humidity": 45.1}}'


def preload(url: str, client_id: str, topic: str, n: int) -> None:
    ep = MqttEndpoint.from_url(url)
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    sub.connect(ep.host, ep.port)
    sub.subscribe(topic + "/#", 1)
    sub.loop(1)
    sub.loop(1)
    sub.disconnect()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect(ep.host, ep.port)
    pub.loop_start()
    infos = [pub.publish(f"{topic}/d{i % 100}", PAYLOAD, qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()


async def drain_aiomqtt(url: str, client_id: str, topic: str, n: int) -> float:
    ep = MqttEndpoint.from_url(url)
    got = 0
    async with aiomqtt.Client(
        ep.host,
        ep.port,
        identifier=client_id,
        clean_session=False,
        protocol=aiomqtt.ProtocolVersion.V311,
        max_queued_incoming_messages=0,
    ) as client:
        t0 = time.perf_counter()
        async for _ in client.messages:
            got += 1
            if got >= n:
                break
        return n / (time.perf_counter() - t0)


async def drain_ours(url: str, client_id: str, topic: str, n: int) -> float:
    got = 0
    done = asyncio.Event()
    t0 = 0.0
    client: AsyncMqtt

    def on_message(msg: Message) -> None:
        nonlocal got, t0
        if got == 0:
            t0 = time.perf_counter()
        got += 1
        client.ack(msg.mid, msg.qos)  # manual ack, as the ingest does after commit
        if got >= n:
            done.set()

    ep = MqttEndpoint.from_url(url + "?protocol=3.1.1")
    client = AsyncMqtt(ep, client_id, on_message=on_message, clean_start=False, manual_ack=True)
    await client.start()
    await done.wait()
    rate = n / (time.perf_counter() - t0)
    await client.stop()
    return rate


def drain_paho_thread(url: str, client_id: str, topic: str, n: int) -> float:
    ep = MqttEndpoint.from_url(url)
    done = threading.Event()
    got = 0
    t0 = 0.0

    def on_message(_c: Any, _u: Any, _m: paho.MQTTMessage) -> None:
        nonlocal got, t0
        if got == 0:
            t0 = time.perf_counter()
        got += 1
        if got >= n:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.on_message = on_message
    c.connect(ep.host, ep.port)
    c.loop_start()
    done.wait(300)
    rate = n / (time.perf_counter() - t0)
    c.disconnect()
    c.loop_stop()
    return rate


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, mosquitto(Path(tmp) / "m") as broker:
        url = broker.url
        results: dict[str, list[float]] = {
            "aiomqtt": [],
            "ours_manual_ack": [],
            "paho_thread": [],
        }
        for _ in range(args.repeat):
            for name in results:
                cid = f"b-{uuid.uuid4().hex[:6]}"
                topic = f"bench/{cid}"
                preload(url, cid, topic, args.messages)
                if name == "aiomqtt":
                    rate = await drain_aiomqtt(url, cid, topic, args.messages)
                elif name == "ours_manual_ack":
                    rate = await drain_ours(url, cid, topic, args.messages)
                else:
                    rate = await asyncio.to_thread(
                        drain_paho_thread, url, cid, topic, args.messages
                    )
                results[name].append(rate)
                print(f"{name}: {rate:,.0f} msg/s", flush=True)
    base = statistics.median(results["aiomqtt"])
    print("\nmedian msg/s (ratio to aiomqtt):")
    for name, rates in results.items():
        med = statistics.median(rates)
        print(f"  {name:26s} {med:10,.0f}  ({med / base:.2f}x)")


if __name__ == "__main__":
    asyncio.run(main())
