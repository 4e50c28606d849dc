"""The production broker configuration (deploy/mosquitto/): per-device credentials and pattern
ACLs. A device cannot publish as another device, cannot reach the validated stream or other
devices' commands, an id with + # / matches nothing, and nothing it was denied is stored."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest.topics import Topics
from tests.helpers import running_ingest, wait_until
from tests.integration.secure_broker import SecureBroker
from tests.integration.secure_broker import secure_broker as start_secure_broker
from tests.integration.test_cli import run_cli

pytestmark = pytest.mark.integration

DEVICES = {"dev-1": "pw-1", "dev-2": "pw-2", "a/b": "pw-slash"}


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    # dev-2 the way an operator adds a device; a/b cannot be added with add-device
    with start_secure_broker(tmp_path, DEVICES, via_cli={"dev-2"}) as broker:
        yield broker


class Device:
    """A paho MQTT v5 client that records the reason codes the broker answers with."""

    def __init__(self, broker: SecureBroker, user: str, password: str | None = None) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )  # fmt: skip
        self.client.username_pw_set(
            user, broker.users.get(user, "") if password is None else password
        )
        self.connack: ReasonCode | None = None
        self.suback: list[ReasonCode] = []
        self.pubacks: dict[int, ReasonCode] = {}
        self.received: list[tuple[str, bytes]] = []
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.suback.extend(codes)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", broker.port_for(user))
        self.client.loop_start()

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self.connack = rc

    def _on_publish(
        self, _c: object, _u: object, mid: int, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self.pubacks[mid] = rc

    def publish(self, topic: str, payload: bytes) -> int:
        return self.client.publish(topic, payload, qos=1).mid

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(check: object, timeout: float = 5.0) -> None:
    async def ok() -> bool:
        return bool(check() if callable(check) else check)

    await wait_until(ok, timeout=timeout)


async def test_devices_only_use_their_own_topics(
    secure_broker: SecureBroker, database_url: str
) -> None:
    topics = Topics("")
    anonymous = Device(secure_broker, "nobody", password="")
    wrong = Device(secure_broker, "dev-1", password="not-the-password")
    await until(lambda: anonymous.connack is not None and wrong.connack is not None)
    assert anonymous.connack is not None and anonymous.connack.is_failure
    assert wrong.connack is not None and wrong.connack.is_failure
    anonymous.close()
    wrong.close()

    async with running_ingest(secure_broker.url("bridge-ingest"), database_url, topics):
        dev1, dev2 = Device(secure_broker, "dev-1"), Device(secure_broker, "dev-2")
        slash, front = Device(secure_broker, "a/b"), Device(secure_broker, "bridge-front")
        clients = (dev1, dev2, slash, front)
        try:
            await until(lambda: all(c.connack is not None for c in clients))
            assert all(c.connack is not None and not c.connack.is_failure for c in clients)
            # mosquitto grants every SUBACK and enforces "read" on delivery
            dev1.client.subscribe([("devices/dev-2/commands/+", 1), ("telemetry/#", 0)])
            dev2.client.subscribe("devices/dev-2/commands/+", 1)
            front.client.subscribe("telemetry/#", 0)
            await until(lambda: len(dev1.suback) == 2 and len(dev2.suback) == 1)
            await until(lambda: len(front.suback) == 1)

            own = dev1.publish("devices/dev-1/telemetry", b'{"t": 1}')
            dev1.publish("devices/dev-2/telemetry", b'{"t": 666}')  # as another device
            dev1.publish("telemetry/dev-1/t", b'{"value": 666}')  # into the validated stream
            slash.publish("devices/a/b/telemetry", b'{"t": 666}')  # + # / in the id
            front.publish("devices/dev-2/commands/c1", b'{"command": "reboot"}')
            await until(lambda: len(dev1.pubacks) == 3 and len(slash.pubacks) == 1)
            assert not dev1.pubacks[own].is_failure

            # the ingest stored dev-1's own reading and republished it on the stream
            await until(lambda: any(b'"value":1.0' in p for _, p in front.received), 10)
            await until(lambda: len(dev2.received) == 1)  # dev-2 got its command
            await asyncio.sleep(0.5)  # anything that slipped through would be here now
            assert dev1.received == [], "dev-1 read another device's command or the stream"
            assert all(b"666" not in p for _, p in front.received), front.received
            db = await asyncpg.connect(database_url)
            try:
                rows = await db.fetch("SELECT device_id, value FROM readings")
                assert [(r["device_id"], r["value"]) for r in rows] == [("dev-1", 1.0)]
            finally:
                await db.close()
        finally:
            for c in clients:
                c.close()


async def test_bridge_users_have_only_what_they_need(secure_broker: SecureBroker) -> None:
    front, ingest = Device(secure_broker, "bridge-front"), Device(secure_broker, "bridge-ingest")
    watcher = Device(secure_broker, "bridge-front")
    try:
        dev2 = Device(secure_broker, "dev-2")
        await until(lambda: all(c.connack is not None for c in (front, ingest, watcher, dev2)))
        # the front may not read what devices send (only the validated stream), nor write
        # device status; the ingest may not send commands
        front.client.subscribe("devices/+/telemetry", 1)
        watcher.client.subscribe([("status/#", 0), ("devices/+/commands/+/result", 1)])
        dev2.client.subscribe("devices/dev-2/commands/+", 1)
        await until(lambda: len(front.suback) == 1 and len(watcher.suback) == 2)
        await until(lambda: len(dev2.suback) == 1)
        ingest.publish("devices/dev-2/commands/c1", b'{"command": "reboot"}')
        front.publish("devices/dev-9/status", b'"offline"')
        front.publish("status/dev-9", b'{"new_status": "offline"}')
        ingest.publish("status/dev-9", b'{"new_status": "online"}')  # allowed: the ingest's job
        dev = Device(secure_broker, "dev-1")
        await until(lambda: dev.connack is not None)
        dev.publish("devices/dev-1/telemetry", b'{"t": 1}')
        dev.publish("devices/dev-1/commands/c7/result", b'{"status": "ok"}')
        await until(lambda: len(watcher.received) == 2)
        await asyncio.sleep(0.5)
        assert sorted(t for t, _ in watcher.received) == [
            "devices/dev-1/commands/c7/result",
            "status/dev-9",
        ]
        assert b"online" in dict(watcher.received)["status/dev-9"]
        assert front.received == [] and dev2.received == []
        dev.close()
        dev2.close()
    finally:
        for c in (front, ingest, watcher):
            c.close()


def test_add_device_refuses_ids_the_acls_cannot_protect(tmp_path: Path) -> None:
    # the last ones: the bridge's own broker users and client ids (the device listener makes
    # the username the client id, so such a device would hold the ingest's session)
    reserved = ("bridge-ingest", "Bridge-Front", "telemetry-bridge-ingest", "telemetry-bridge-x")
    for bad in ("a/b", "dev+", "#", "dev 1", *reserved):
        done = run_cli("add-device", bad, "--password-file", str(tmp_path / "passwd"))
        assert done.returncode == 2 and "device id" in done.stderr, (bad, done.stderr)
    assert not (tmp_path / "passwd").exists() or (tmp_path / "passwd").read_text() == ""
