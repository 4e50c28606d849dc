"""ingest/mqtt.py against a real mosquitto: acknowledgement only when asked, persistent
sessions, pausing, a refused login named in the log, and a dead link noticed by keepalive."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from ingest.mqtt import AsyncMqtt, Message, MqttEndpoint
from ingest.mqtt_packets import ConnAck
from tests.helpers import BrokerInfo, MqttPeer, wait_until
from tests.integration.secure_broker import secure_broker

pytestmark = pytest.mark.integration


def _until(predicate: object) -> object:
    async def check() -> bool:
        return bool(predicate())  # type: ignore[operator]

    return wait_until(check, timeout=10)


def _client(url: str, client_id: str, got: list[Message], topic: str, **kw: object) -> AsyncMqtt:
    return AsyncMqtt(
        MqttEndpoint.from_url(url),
        client_id,
        on_message=got.append,
        subscriptions=[(topic, 1)],
        clean_start=False,
        session_expiry_s=300,
        manual_ack=True,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.needs_mosquitto("the DUP flag on redelivered messages; iotcore does not set it")
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_only_acknowledged_messages_leave_the_session(
    broker: BrokerInfo, protocol: str
) -> None:
    url = broker.url_for(protocol)
    topic = f"ack-{uuid.uuid4().hex[:8]}/devices/d1/telemetry"
    client_id = f"ack-{uuid.uuid4().hex[:8]}"
    got: list[Message] = []
    client = _client(url, client_id, got, topic)
    await client.start()
    peer = MqttPeer(broker.url)
    try:
        peer.publish_many([(topic, b"%d" % i) for i in range(10)])
        await _until(lambda: len(got) == 10)
        assert [m.payload for m in got] == [b"%d" % i for i in range(10)]
        assert all(m.qos == 1 and m.mid and m.topic == topic for m in got)
        for m in got[:4]:
            client.ack(m.mid, m.qos)
        await client.stop()  # the acknowledgements queued leave before the DISCONNECT

        again: list[Message] = []
        client = _client(url, client_id, again, topic)
        await client.start()
        await _until(lambda: len(again) == 6)
        await asyncio.sleep(0.3)  # and nothing more comes
        assert [m.payload for m in again] == [b"%d" % i for i in range(4, 10)]
        assert all(m.dup for m in again)  # redelivered, as the standard marks them
        for m in again:
            client.ack(m.mid, m.qos)
        await client.stop()

        last: list[Message] = []
        client = _client(url, client_id, last, topic)
        await client.start()
        await asyncio.sleep(0.5)
        assert last == []
    finally:
        await client.stop()
        peer.close()


async def test_a_paused_client_holds_messages_back_and_keeps_their_order(
    broker: BrokerInfo,
) -> None:
    topic = f"pause-{uuid.uuid4().hex[:8]}/t"
    got: list[Message] = []
    client: AsyncMqtt

    def handler(message: Message) -> None:
        got.append(message)
        if len(got) == 3:
            client.pause_reading()

    client = AsyncMqtt(
        MqttEndpoint.from_url(broker.url), f"pause-{uuid.uuid4().hex[:8]}",
        on_message=handler, subscriptions=[(topic, 1)],
    )  # fmt: skip
    await client.start()
    peer = MqttPeer(broker.url)
    try:
        peer.publish_many([(topic, b"%d" % i) for i in range(200)])
        await _until(lambda: len(got) >= 3)
        await asyncio.sleep(0.3)
        assert len(got) == 3 and client.paused
        client.resume_reading()
        await _until(lambda: len(got) == 200)
        assert [m.payload for m in got] == [b"%d" % i for i in range(200)]
    finally:
        await client.stop()
        peer.close()


async def test_a_refused_login_is_logged_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="ingest.mqtt")
    with secure_broker(tmp_path, {}) as broker:
        url = broker.url("bridge-ingest").replace(":ingest-pw@", ":wrong@")
        client = AsyncMqtt(MqttEndpoint.from_url(url), "refused", on_message=lambda _m: None)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.start(), 2)
        finally:
            await client.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        "refused the connection" in line
        and ("not authorized" in line or "bad user name or password" in line)
        and "wrong" not in line  # never the password
        for line in lines
    ), lines


async def test_a_broker_that_stops_answering_is_given_up_after_the_keepalive() -> None:
    """A peer that accepts, says CONNACK, then goes silent (a dead link TCP does not see)."""
    connections = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read(1024)  # the CONNECT
        writer.write(b"\x20\x03\x00\x00\x00")  # CONNACK, MQTT 5, accepted
        while await reader.read(1024):  # PINGREQs, never answered
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connacks: list[ConnAck] = []

    async def on_connect(ack: ConnAck) -> None:
        connacks.append(ack)

    client = AsyncMqtt(
        MqttEndpoint.from_url(f"mqtt://127.0.0.1:{port}"), "silent",
        on_message=lambda _m: None, keepalive=1, on_connect=on_connect,
    )  # fmt: skip
    try:
        await asyncio.wait_for(client.start(), 5)
        assert client.generation == 0
        await _until(lambda: client.generation >= 1 and connections >= 2)
        assert len(connacks) >= 1
    finally:
        await client.stop()
        server.close()
        await server.wait_closed()
