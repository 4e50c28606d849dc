"""The stack the integration tests run against: the ingest and/or the front on the test's event
loop, against a broker and a test database, and what a test does with it.

    async with running_stack(broker.url, database_url, topic_prefix) as stack:
        ws = await stack.client(stack.token())
        stack.reading("d1", t=1.5)

``ingest=False`` or ``front=False`` runs one of them alone; ``settings`` overrides the front's
settings, ``ingest_options`` the ingest's (``IngestConfig`` fields). A front without a database
is ``database_url=None``. The fixtures below are the usual shapes of it; ``ingest_fixture`` is
the ingest alone with a connection to its database, for tests that read what it stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from bridge.app import run_front
from bridge.auth import mint
from bridge.config import Settings
from bridge.embedded import free_port
from bridge.server import Front
from ingest.service import IngestService
from ingest.topics import Topics
from tests.helpers import (
    BrokerInfo,
    MqttPeer,
    ServiceTask,
    ingest_service,
    running_ingest,
    wait_until,
)

SECRET = "front-test-secret-" + "x" * 40
SCOPE = "telemetry:read alerts:read devices:read"
# A test's front: its secret, and room for the many connections a test opens from one address.
FRONT_SETTINGS: dict[str, Any] = {"jwt_secret": SECRET, "ws_new_connections_per_ip_per_min": 1000}
# A test's ingest: stores at once, accepts old timestamps, sees rule changes within 0.5 s.
INGEST_OPTIONS: dict[str, Any] = {
    "batch_max_wait_s": 0.01,
    "max_past": timedelta(days=3650),
    "rules_reload_s": 0.5,
}


class Stack:
    """A front (and ingest) as a test sees it: its URL, tokens, clients, a publishing peer, and
    the in-process handles (``ingest``, ``front``, ``settings``) where a stack runs them."""

    def __init__(self, port: int, topics: Topics, peer: MqttPeer) -> None:
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"
        self.topics = topics
        self.peer = peer
        self.ingest: IngestService | None = None
        self.front: Front | None = None
        self.settings: Settings | None = None
        self._front_task: ServiceTask | None = None

    def token(self, scope: str = SCOPE, **kw: Any) -> str:
        return mint(key=SECRET, algorithm="HS256", sub=kw.pop("sub", "alice"), scopes=scope, **kw)

    async def client(self, token: str | None = None, path: str = "/ws") -> ClientConnection:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return await connect(self.url + path, additional_headers=headers, open_timeout=5)

    def reading(self, device: str, **values: float) -> None:
        self.peer.publish(self.topics.device_telemetry(device), orjson.dumps(values))

    def stream(self, device: str, metric: str, value: float, *, pad: int = 0, qos: int = 0) -> None:
        """A reading straight onto the validated stream, as the ingest publishes it after a
        commit (``pad`` bytes of incompressible padding: deflate cannot shrink it)."""
        event: dict[str, Any] = {
            "device_id": device,
            "metric": metric,
            "value": value,
            "unit": None,
            "ts": "2026-11-22T00:00:00.000Z",
            "received_at": "2026-11-22T00:00:00.000Z",
        }
        if pad:
            event["pad"] = os.urandom(pad // 2).hex()
        self.peer.publish(self.topics.telemetry(device, metric), orjson.dumps(event), qos=qos)

    async def http_json(self, path: str) -> dict[str, Any]:
        return await http_json(self, path)

    async def healthy(self) -> bool:
        """The front's broker connection (and database, if any) is up: subscriptions work."""
        return (await self.http_json("/health"))["status"] == "healthy"

    async def stop_front(self) -> None:
        assert self._front_task is not None, "this stack runs no front"
        await self._front_task.stop()

    async def start_front(self) -> None:
        """The front again after ``stop_front``: same port, same settings."""
        assert self._front_task is not None, "this stack runs no front"
        await self._front_task.start()


async def http_json(stack: Stack, path: str) -> dict[str, Any]:
    """GET ``path`` from the stack's front, expecting 200 and a JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    return orjson.loads(body)


@contextlib.asynccontextmanager
async def running_stack(
    broker_url: str,
    database_url: str | None,
    topic_prefix: str,
    *,
    ingest: bool = True,
    front: bool = True,
    settings: Mapping[str, Any] | None = None,
    ingest_options: Mapping[str, Any] | None = None,
    wait_healthy: bool = True,
) -> AsyncIterator[Stack]:
    """The ingest and the front started together, yielded once both are ready (and the front
    healthy, unless ``wait_healthy=False``), stopped together afterwards."""
    topics = Topics(topic_prefix)
    front_settings = Settings(
        mqtt_url=broker_url,
        ws_port=free_port(),
        mqtt_topic_prefix=topic_prefix,
        **{**FRONT_SETTINGS, **(settings or {})},
    )
    peer = MqttPeer(broker_url)
    stack = Stack(front_settings.ws_port, topics, peer)
    stack.settings = front_settings
    tasks: list[ServiceTask] = []
    if ingest:
        assert database_url is not None, "the ingest needs a database"
        options = {**INGEST_OPTIONS, **(ingest_options or {})}
        stack.ingest = ingest_service(broker_url, database_url, topics, **options)
        tasks.append(ServiceTask(stack.ingest.run))
    if front:

        def on_front(running: Front) -> None:
            stack.front = running

        stack._front_task = ServiceTask(
            lambda stop, ready: run_front(
                front_settings, broker_url, database_url, stop, ready, on_front=on_front
            )
        )
        tasks.append(stack._front_task)
    try:
        await asyncio.gather(*(task.start() for task in tasks))
        if front and wait_healthy:
            await wait_until(stack.healthy, timeout=10)
        yield stack
    finally:
        peer.close()
        await asyncio.gather(*(task.stop() for task in tasks))


# -- fixtures: declare them with ``name = pytest.fixture(stack_fixture)`` --------------------------
async def stack_fixture(
    broker: BrokerInfo, database_url: str, topic_prefix: str, *, rules_reload_s: float = 0.5
) -> AsyncIterator[Stack]:
    """The ingest and the front."""
    async with running_stack(
        broker.url, database_url, topic_prefix, ingest_options={"rules_reload_s": rules_reload_s}
    ) as stack:
        yield stack


async def front_fixture(
    broker: BrokerInfo, database_url: str, topic_prefix: str, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    """A front alone (no ingest); settings overrides come as an indirect parameter (a dict)."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    async with running_stack(
        broker.url, database_url, topic_prefix, ingest=False, settings=overrides
    ) as stack:
        yield stack


class RunningIngest:
    """An ingest on the test's event loop as its tests see it: the service, a connection to its
    database, its topics, and the mapping source it was given (None without one)."""

    def __init__(
        self, service: IngestService, db: asyncpg.Connection, topics: Topics, source: Any = None
    ) -> None:
        self.service = service
        self.db = db
        self.topics = topics
        self.source = source

    def topic(self, rest: str) -> str:
        """A topic under the test's prefix (a firmware's own, read by a mapping)."""
        return f"{self.topics.prefix}/{rest}"

    async def count(self, sql: str = "SELECT count(*) FROM readings", *args: Any) -> int:
        return int(await self.db.fetchval(sql, *args))


async def ingest_fixture(
    broker: BrokerInfo, database_url: str, topic_prefix: str, **options: Any
) -> AsyncIterator[RunningIngest]:
    """The ingest alone; ``options`` are ``IngestConfig`` fields (``mappings``: the source)."""
    topics = Topics(topic_prefix)
    async with running_ingest(broker.url, database_url, topics, **options) as service:
        db = await asyncpg.connect(database_url)
        try:
            yield RunningIngest(service, db, topics, options.get("mappings"))
        finally:
            await db.close()
