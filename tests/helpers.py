"""Small helpers for integration tests: a real MQTT publisher/subscriber and waiting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.embedded import IotcoreBroker, MosquittoProcess
from ingest.mqtt import MqttEndpoint
from ingest.service import IngestConfig, IngestService
from ingest.topics import Topics


class ServiceTask:
    """A service's ``run(stop, ready)`` as a task on the test's event loop: ``start`` returns
    once it is ready (or raises what it died of), ``stop`` sets its stop event and waits for it.
    It can be started again after a stop."""

    def __init__(
        self, run: Callable[[asyncio.Event, asyncio.Event], Coroutine[Any, Any, None]]
    ) -> None:
        self._run = run
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10.0) -> None:
        self._stop, ready = asyncio.Event(), asyncio.Event()
        self._task = task = asyncio.create_task(self._run(self._stop, ready))
        readiness = asyncio.create_task(ready.wait())
        await asyncio.wait({task, readiness}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        readiness.cancel()
        if not ready.is_set():
            if task.done():
                task.result()  # what it died of
            raise TimeoutError(f"not ready within {timeout}s")

    async def stop(self, timeout: float = 20.0) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stop.set()
            await asyncio.wait_for(task, timeout)


def ingest_service(
    mqtt_url: str, database_url: str, topics: Topics, **config: Any
) -> IngestService:
    """An IngestService with its own client id unless ``config`` names one."""
    return IngestService(
        IngestConfig(
            mqtt=MqttEndpoint.from_url(mqtt_url),
            database_url=database_url,
            topics=topics,
            client_id=config.pop("client_id", f"ingest-{uuid.uuid4().hex[:8]}"),
            **config,
        )
    )


@contextlib.asynccontextmanager
async def running_ingest(
    mqtt_url: str, database_url: str, topics: Topics, **config: Any
) -> AsyncIterator[IngestService]:
    """A real IngestService on the test's event loop, stopped (flushed) on exit."""
    service = ingest_service(mqtt_url, database_url, topics, **config)
    task = ServiceTask(service.run)
    try:
        await task.start()
        yield service
    finally:
        await task.stop(timeout=30)


# Set to 1 to run the tests as on a machine without mosquitto (the fallback broker, and the tests
# that need mosquitto skipped), although one is installed.
NO_MOSQUITTO_ENV = "BRIDGE_TEST_NO_MOSQUITTO"


def mosquitto_binary() -> str | None:
    """The mosquitto the tests may start (where ``MosquittoProcess`` looks), or None when it is
    not installed or hidden with ``BRIDGE_TEST_NO_MOSQUITTO=1``."""
    if os.environ.get(NO_MOSQUITTO_ENV, "") not in ("", "0"):
        return None
    candidates = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
    return shutil.which("mosquitto") or next((p for p in candidates if os.path.exists(p)), None)


# Set to 1 to run the tests as on a machine without PostgreSQL: no local server, no system
# binaries; the tests then use the embedded pgserver cluster (and its binaries).
NO_POSTGRES_ENV = "BRIDGE_TEST_NO_POSTGRES"


def no_postgres() -> bool:
    return os.environ.get(NO_POSTGRES_ENV, "") not in ("", "0")


@dataclass
class BrokerInfo:
    """The tests' broker: ``kind`` is "mosquitto" (a private one), "iotcore" (the fallback
    broker `up` uses when mosquitto is missing) or "external" (``BRIDGE_TEST_MQTT_URL``)."""

    url: str
    process: MosquittoProcess | IotcoreBroker | None
    kind: str = "external"

    def url_for(self, protocol: str) -> str:
        """The broker's URL for MQTT ``protocol`` ("5" or "3.1.1"); the test skips where the
        broker does not speak it (the fallback broker speaks 3.1.1 only)."""
        if "protocol=3.1.1" in self.url:
            if protocol != "3.1.1":
                pytest.skip(f"needs MQTT {protocol}: the fallback broker iotcore speaks 3.1.1")
            return self.url
        if protocol == "5":
            return self.url
        return self.url + ("&" if "?" in self.url else "?") + "protocol=3.1.1"


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, interval: float = 0.05
) -> None:
    """Poll ``check`` until it is true; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@dataclass
class MqttPeer:
    """A blocking paho client on its own network thread, for tests and benchmarks."""

    url: str
    client_id: str = field(default_factory=lambda: f"peer-{uuid.uuid4().hex[:8]}")
    received: list[paho.MQTTMessage] = field(default_factory=list)

    def __post_init__(self) -> None:
        ep = MqttEndpoint.from_url(self.url)
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=ep.paho_protocol
        )
        if ep.username:
            self.client.username_pw_set(ep.username, ep.password)
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.on_message = self._on_message
        self._subacks: set[int] = set()
        self._suback = threading.Condition()
        self.client.on_subscribe = self._on_subscribe
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(ep.host, ep.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError(f"cannot connect to {ep.redacted()}")

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append(msg)

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._suback:
            self._subacks.add(mid)
            self._suback.notify_all()

    def messages(self, topic_prefix: str = "") -> list[paho.MQTTMessage]:
        with self._lock:
            return [m for m in self.received if m.topic.startswith(topic_prefix)]

    def subscribe(self, topic: str, qos: int = 1) -> None:
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == 0
        with self._suback:
            assert self._suback.wait_for(lambda: mid in self._subacks, 10), "no SUBACK"

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(10)
            assert info.is_published(), "no PUBACK within 10 s"

    def publish_many(self, items: list[tuple[str, bytes]], qos: int = 1) -> int:
        """Publish all, then wait for every PUBACK; returns how many were acknowledged."""
        infos = [self.client.publish(t, p, qos=qos) for t, p in items]
        deadline = time.monotonic() + 60
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        return sum(1 for i in infos if i.is_published())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
