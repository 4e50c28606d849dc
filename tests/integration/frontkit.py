"""Shared pieces of the front's integration tests: a running stack and small client helpers."""

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

from bridge.app import run_front
from bridge.auth import mint
from bridge.config import Settings
from bridge.embedded import free_port
from ingest.mqtt import MqttEndpoint
from ingest.service import IngestConfig, IngestService
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, wait_until

SECRET = "front-test-secret-" + "x" * 40


class Stack:
    def __init__(self, port: int, topics: Topics, peer: MqttPeer) -> None:
        self.url = f"ws://127.0.0.1:{port}"
        self.topics = topics
        self.peer = peer
        self.ingest: IngestService | None = None

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


async def stack_fixture(
    broker: BrokerInfo, database_url: str, topic_prefix: str, *, rules_reload_s: float = 0.5
) -> AsyncIterator[Stack]:
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
            rules_reload_s=rules_reload_s,
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
    stack.ingest = ingest

    async def healthy() -> bool:  # the front's broker connection is up: subscriptions work
        return (await http_json(stack, "/health"))["status"] == "healthy"

    try:
        await wait_until(healthy, timeout=10)
        yield stack
    finally:
        peer.close()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)


async def http_json(stack: Stack, path: str) -> dict[str, Any]:
    host, port = stack.url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    return orjson.loads(body)
