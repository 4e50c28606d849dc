"""The WebSocket front against a real Mosquitto, PostgreSQL and the real ingest."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.app import run_front
from bridge.auth import mint
from bridge.config import Settings
from bridge.embedded import free_port
from ingest.mqtt import MqttEndpoint
from ingest.service import IngestConfig, IngestService
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, wait_until

pytestmark = pytest.mark.integration

SECRET = "front-test-secret-" + "x" * 40


class Stack:
    def __init__(self, port: int, topics: Topics, peer: MqttPeer) -> None:
        self.url = f"ws://127.0.0.1:{port}"
        self.topics = topics
        self.peer = peer

    def token(self, scope: str = "telemetry:read alerts:read devices:read", **kw: Any) -> str:
        return mint(key=SECRET, algorithm="HS256", sub=kw.pop("sub", "alice"), scopes=scope, **kw)

    async def client(self, token: str | None = None, path: str = "/ws") -> ClientConnection:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return await connect(self.url + path, additional_headers=headers, open_timeout=5)

    def reading(self, device: str, **values: float) -> None:
        self.peer.publish(self.topics.device_telemetry(device), orjson.dumps(values))


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_type(ws: ClientConnection, type_: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv(ws, max(0.01, deadline - time.monotonic()))
        if msg["type"] == type_:
            return msg


async def nothing_more(ws: ClientConnection, within: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), within)


@pytest.fixture
async def stack(broker: BrokerInfo, database_url: str, topic_prefix: str) -> AsyncIterator[Stack]:
    port = free_port()
    settings = Settings(
        mqtt_url=broker.url,
        jwt_secret=SECRET,
        ws_port=port,
        mqtt_topic_prefix=topic_prefix,
        ws_new_connections_per_ip_per_min=1000,
    )
    topics = Topics(topic_prefix)
    ingest = IngestService(
        IngestConfig(
            mqtt=MqttEndpoint.from_url(broker.url),
            database_url=database_url,
            topics=topics,
            client_id=f"ingest-{uuid.uuid4().hex[:8]}",
            batch_max_wait_s=0.01,
            max_past=timedelta(days=3650),
        )
    )
    stop = asyncio.Event()
    ingest_ready, front_ready = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(ingest.run(stop, ingest_ready)),
        asyncio.create_task(run_front(settings, broker.url, database_url, stop, front_ready)),
    ]
    await asyncio.wait_for(asyncio.gather(ingest_ready.wait(), front_ready.wait()), 10)
    peer = MqttPeer(broker.url)
    stack = Stack(port, topics, peer)

    async def healthy() -> bool:  # the front's broker connection is up: subscriptions work
        return (await _http_json(stack, "/health"))["status"] == "healthy"

    try:
        await wait_until(healthy, timeout=10)
        yield stack
    finally:
        peer.close()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)


async def test_reading_reaches_a_channel_subscriber_with_the_right_shape(stack: Stack) -> None:
    async with await stack.client(stack.token()) as ws:
        hello = await recv(ws)
        assert hello["type"] == "connected" and hello["protocol"] == 1 and hello["client_id"]
        await ws.send(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "id": 7,
                    "channel": "telemetry",
                    "device_id": "d1",
                    "filters": {"metrics": ["temperature"]},
                }
            ).decode()
        )
        sub = await recv(ws)
        assert sub["type"] == "subscribed" and sub["id"] == 7
        assert sub["mqtt_topics"] == [stack.topics.telemetry("d1", "temperature")]
        stack.reading("d2", temperature=1.0)  # other device: not delivered
        stack.reading("d1", humidity=2.0)  # other metric: not delivered
        stack.reading("d1", temperature=21.5)
        update = await recv_type(ws, "telemetry_update")
        assert update["channel"] == "telemetry" and update["device_id"] == "d1"
        assert update["subscription_id"] == sub["subscription_id"]
        assert update["telemetry"]["temperature"]["value"] == 21.5
        assert update["telemetry"]["temperature"]["timestamp"].endswith("Z")
        assert update["timestamp"].endswith("Z")
        await nothing_more(ws)


async def test_two_clients_share_one_broker_subscription_released_when_both_leave(
    stack: Stack,
) -> None:
    msg = orjson.dumps({"type": "subscribe", "channel": "devices", "device_id": "d7"}).decode()
    a = await stack.client(stack.token())
    b = await stack.client(stack.token(sub="bob"))
    for ws in (a, b):
        await recv(ws)
        await ws.send(msg)
        assert (await recv(ws))["mqtt_topics"] == [stack.topics.status_filter("d7")]
    stats = await _http_json(stack, "/metrics")
    assert stats["broker"]["subscriptions"] == 1  # one filter, two clients
    await a.close()
    await b.close()

    async def released() -> bool:
        return (await _http_json(stack, "/metrics"))["broker"]["subscriptions"] == 0

    await wait_until(released, timeout=5)


async def _http_json(stack: Stack, path: str) -> dict[str, Any]:
    host, port = stack.url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    return orjson.loads(body)


async def test_handshake_auth_failures_are_http_401(stack: Stack) -> None:
    bad = [
        "garbage",
        mint(key="y" * 48, algorithm="HS256", sub="alice", scopes="admin"),
        mint(key=SECRET, algorithm="HS256", sub="alice", scopes="admin", ttl_s=-10),
    ]
    for token in bad:
        with pytest.raises(InvalidStatus) as err:
            await stack.client(token)
        assert err.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as err:
        await connect(f"{stack.url}/ws?token=garbage", open_timeout=5)
    assert err.value.response.status_code == 401


async def test_auth_by_message_in_both_dialects(stack: Stack) -> None:
    async with await stack.client() as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "channel": "telemetry"}).decode())
        assert (await recv(ws))["code"] == 401
        await ws.send(orjson.dumps({"type": "auth", "token": stack.token()}).decode())
        reply = await recv(ws)
        assert reply["type"] == "auth_response" and reply["success"] is True
    async with await stack.client() as ws:
        await ws.send(orjson.dumps({"type": "authenticate", "token": stack.token()}).decode())
        assert (await recv(ws))["type"] == "auth_success"
    async with await stack.client() as ws:
        await ws.send(orjson.dumps({"type": "authenticate", "token": "bad"}).decode())
        err = await recv(ws)
        assert err["type"] == "error" and err["code"] == 401 and err["error"] == "invalid_token"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with await stack.client() as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": "bad"}).decode())
        reply = await recv(ws)
        assert reply["type"] == "auth_response" and reply["success"] is False
        assert reply["error"] == "invalid_token"


ERRORS = [
    ("not json", 400, "invalid_json"),
    ("[1, 2]", 400, "bad_request"),
    ('{"no": "type"}', 400, "bad_request"),
    ('{"type": "frobnicate"}', 400, "bad_request"),
    ('{"type": "subscribe", "channel": "telemetry", "device_id": "+"}', 422, "validation_error"),
    ('{"type": "subscribe", "channel": "telemetry", "device_id": "a/b"}', 422, "validation_error"),
    ('{"type": "subscribe", "channel": "telemetry", "device_id": "$SYS"}', 422, "validation_error"),
    ('{"type": "subscribe", "channel": "telemetry", "device_id": "#"}', 422, "validation_error"),
    ('{"type": "subscribe", "channel": "nope"}', 422, "validation_error"),
    ('{"type": "subscribe", "channel": "alerts"}', 403, "forbidden"),
    ('{"type": "unsubscribe", "subscription_id": "sub_nope"}', 404, "not_found"),
]


@pytest.mark.parametrize(("frame", "code", "error"), ERRORS)
async def test_error_table(stack: Stack, frame: str, code: int, error: str) -> None:
    async with await stack.client(stack.token(scope="telemetry:read")) as ws:
        await recv(ws)
        await ws.send(frame)
        reply = await recv(ws)
        assert reply["type"] == "error" and reply["code"] == code and reply["error"] == error
        assert reply["message"] and "Traceback" not in reply["message"]
        await ws.send('{"type": "ping", "id": "p1"}')  # the connection keeps serving
        pong = await recv(ws)
        assert pong["type"] == "pong" and pong["id"] == "p1"


async def test_device_outside_the_claim_is_forbidden_and_never_delivered(stack: Stack) -> None:
    token = stack.token(devices=["plant-a-*"])
    async with await stack.client(token) as ws:
        await recv(ws)
        await ws.send('{"type": "subscribe", "channel": "telemetry", "device_id": "plant-b-1"}')
        assert (await recv(ws))["code"] == 403
        await ws.send('{"type": "subscribe", "channel": "telemetry"}')
        assert (await recv(ws))["type"] == "subscribed"
        stack.reading("plant-b-1", t=1.0)
        stack.reading("plant-a-1", t=2.0)
        update = await recv_type(ws, "telemetry_update")
        assert update["device_id"] == "plant-a-1"
        await nothing_more(ws)


async def test_topics_and_events_dialects(stack: Stack) -> None:
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        await ws.send(
            '{"type": "subscribe", "topics": ["telemetry"], "filters": {"device_id": "e1"}}'
        )
        conf = await recv(ws)
        assert conf["type"] == "subscription_confirmed" and conf["topics"] == ["telemetry"]
        await ws.send(
            '{"type": "subscribe", "events": ["telemetry.updated"], "filters": {"agentId": "e1"}}'
        )
        ev = await recv(ws)
        assert ev["type"] == "subscribed" and ev["events"] == ["telemetry.updated"]
        stack.reading("e1", v=3.0)
        got = [await recv_type(ws, "event"), await recv_type(ws, "event")]
        assert {("topic" in g, "eventType" in g) for g in got} == {(True, False), (False, True)}
        for g in got:
            assert g["data"]["device_id"] == "e1" and g["data"]["value"] == 3.0
        await ws.send('{"type": "list_subscriptions"}')
        listed = await recv(ws)
        assert listed["type"] == "subscriptions_list" and listed["count"] == 2
        await ws.send('{"type": "unsubscribe", "topics": ["telemetry"]}')
        assert (await recv(ws))["type"] == "unsubscription_confirmed"


async def test_health_status_and_metrics(stack: Stack) -> None:
    async def healthy() -> bool:  # the broker connection comes up just after the listener
        return (await _http_json(stack, "/health"))["status"] == "healthy"

    await wait_until(healthy, timeout=10)
    health = await _http_json(stack, "/health")
    assert health["checks"] == {"mqtt": "ok", "database": "ok"}
    status = await _http_json(stack, "/status")
    assert status["service"] == "telemetry-bridge" and status["features"]["auth_required"] is True
    metrics = await _http_json(stack, "/metrics")
    assert {"rate_limiting", "connections", "messages"} <= metrics.keys()


async def test_batch_and_rate_limit(stack: Stack) -> None:
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        await ws.send(
            orjson.dumps(
                {"type": "batch", "messages": [{"type": "ping", "id": i} for i in range(3)]}
            ).decode()
        )
        assert [(await recv(ws))["id"] for _ in range(3)] == [0, 1, 2]
        for _ in range(260):
            await ws.send('{"type": "ping"}')
        replies = [await recv(ws) for _ in range(260)]
        limited = [r for r in replies if r["type"] == "error"]
        assert limited and all(r["code"] == 429 and r["retry_after"] > 0 for r in limited)


async def test_snapshot_then_live(stack: Stack) -> None:
    stack.peer.subscribe(stack.topics.telemetry("s1", "t"))
    stack.reading("s1", t=1.5)

    async def committed() -> bool:  # the stream is published only after the commit
        return bool(stack.peer.messages(stack.topics.telemetry("s1", "t")))

    await wait_until(committed)
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        await ws.send(
            '{"type": "subscribe", "channel": "telemetry", "device_id": "s1", "snapshot": true}'
        )
        assert (await recv(ws))["type"] == "subscribed"
        snap = await recv_type(ws, "telemetry_update")
        assert snap["telemetry"]["t"]["value"] == 1.5
        assert (await recv(ws))["type"] == "snapshot_complete"
        stack.reading("s1", t=2.5)
        live = await recv_type(ws, "telemetry_update")
        assert live["telemetry"]["t"]["value"] == 2.5
