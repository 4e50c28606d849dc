"""The production broker configuration (deploy/mosquitto/): per-device credentials and roles
(the device listener's dynamic-security plugin), the bridge's users with an acl file. A device
cannot publish as another device, cannot subscribe to (let alone read) the validated stream or
other devices' commands, cannot administer the plugin, an id with / reaches nothing the
ingest reads, and nothing it was denied is stored. add-device creates and replaces devices
and touches nothing else."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.device_credentials import ADMIN_URL_ENV, CONTROL_TOPIC, dynsec_call
from bridge.embedded import free_port
from ingest.topics import Topics
from tests.helpers import running_ingest, wait_until
from tests.integration.secure_broker import INGEST_ID, SecureBroker
from tests.integration.secure_broker import secure_broker as start_secure_broker
from tests.integration.test_cli import run_cli

pytestmark = pytest.mark.integration

DEVICES = {"dev-1": "pw-1", "dev-2": "pw-2", "a/b": "pw-slash"}


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    # dev-2 the way an operator adds a device; a/b cannot be added with add-device (the
    # fixture gives it the same kind of role by hand)
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

    ingest = secure_broker.url("bridge-ingest")
    async with running_ingest(ingest, database_url, topics, client_id=INGEST_ID):
        dev1, dev2 = Device(secure_broker, "dev-1"), Device(secure_broker, "dev-2")
        slash, front = Device(secure_broker, "a/b"), Device(secure_broker, "bridge-front")
        clients = (dev1, dev2, slash, front)
        try:
            await until(lambda: all(c.connack is not None for c in clients))
            assert all(c.connack is not None and not c.connack.is_failure for c in clients)
            # a device may subscribe only to what it may read: refused in the SUBACK
            dev1.client.subscribe(
                [("devices/dev-2/commands/+", 1), ("telemetry/#", 0), ("devices/dev-1/#", 1)]
            )
            dev2.client.subscribe("devices/dev-2/commands/+", 1)
            front.client.subscribe("telemetry/#", 0)
            await until(lambda: len(dev1.suback) == 3 and len(dev2.suback) == 1)
            await until(lambda: len(front.suback) == 1)
            assert all(rc.is_failure for rc in dev1.suback), dev1.suback
            assert not dev2.suback[0].is_failure and not front.suback[0].is_failure

            dev1.publish("devices/dev-1/telemetry", b'{"t": 1}')
            dev1.publish("devices/dev-2/telemetry", b'{"t": 666}')  # as another device
            dev1.publish("telemetry/dev-1/t", b'{"value": 666}')  # into the validated stream
            slash.publish("devices/a/b/telemetry", b'{"t": 666}')  # + # / in the id
            # the plugin's admin topic: a device can create no broker user
            evil = {"command": "createClient", "username": "evil", "password": "x"}
            dev1.publish(CONTROL_TOPIC, orjson.dumps({"commands": [evil]}))
            front.publish("devices/dev-2/commands/c1", b'{"command": "reboot"}')
            await until(lambda: len(dev1.pubacks) == 4 and len(slash.pubacks) == 1)
            refused = [dev1.pubacks[mid].is_failure for mid in sorted(dev1.pubacks)]
            assert refused == [False, True, True, True], dev1.pubacks

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
            [evil_client] = dynsec_call(
                secure_broker.admin_url, [{"command": "getClient", "username": "evil"}]
            )
            assert evil_client.get("error") == "Client not found", evil_client
        finally:
            for c in clients:
                c.close()


async def test_bridge_users_have_only_what_they_need(secure_broker: SecureBroker) -> None:
    front, ingest = Device(secure_broker, "bridge-front"), Device(secure_broker, "bridge-ingest")
    # another user of the fronts' listener: one connection per user there
    watcher = Device(secure_broker, "telemetry-bridge-front-1")
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
    # the username the client id, so such a device would hold the ingest's session). Refused
    # before any connection: the admin URL points at a closed port.
    reserved = ("bridge-ingest", "Bridge-Front", "telemetry-bridge-ingest", "telemetry-bridge-x")
    closed = f"mqtt://admin:pw@127.0.0.1:{free_port()}"
    for bad in ("a/b", "dev+", "#", "dev 1", *reserved):
        done = run_cli("add-device", bad, "--admin-url", closed)
        assert done.returncode == 2 and "device id" in done.stderr, (bad, done.stderr)
    done = run_cli("add-device", "dev-9")
    assert done.returncode == 2 and ADMIN_URL_ENV in done.stderr, done.stderr


async def test_add_device_replaces_a_password_and_touches_nothing_else(
    secure_broker: SecureBroker,
) -> None:
    admin = {ADMIN_URL_ENV: secure_broker.admin_url}
    done = run_cli("add-device", "dev-1", env=admin)  # dev-1 exists: a new random password
    assert done.returncode == 0, done.stderr
    [new] = [line.split(": ", 1)[1] for line in done.stdout.splitlines() if "password" in line]
    old, fresh = Device(secure_broker, "dev-1"), Device(secure_broker, "dev-1", password=new)
    await until(lambda: old.connack is not None and fresh.connack is not None)
    assert old.connack is not None and old.connack.is_failure
    assert fresh.connack is not None and not fresh.connack.is_failure
    fresh.client.subscribe([("devices/dev-1/commands/+", 1), ("devices/dev-2/commands/+", 1)])
    await until(lambda: len(fresh.suback) == 2)
    assert [rc.is_failure for rc in fresh.suback] == [False, True]  # the same role as before
    fresh.close()
    old.close()

    # the plugin's admin is a valid device id, but not a device: left alone
    done = run_cli("add-device", "dynsec-admin", "--password", "taken", env=admin)
    assert done.returncode == 2 and "not a device" in done.stderr, done.stderr
    still = Device(secure_broker, "dynsec-admin")
    await until(lambda: still.connack is not None)
    assert still.connack is not None and not still.connack.is_failure
    still.close()


def password_file(path: Path, users: dict[str, str]) -> None:
    path.touch()
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True)


async def test_import_devices_keeps_their_passwords(secure_broker: SecureBroker) -> None:
    """The upgrade from a device listener with a password file: devices keep their passwords
    and get the same role add-device gives."""
    passwd = secure_broker.tmp / "old.passwd"
    password_file(passwd, {"dev-7": "old-pw-7", "dev-1": "other", "bridge-front": "x"})
    with passwd.open("a") as f:
        f.write("dev-8:$6$c2FsdHNhbHQ=$aGFzaA==\n")  # mosquitto 1.x's hash: cannot be imported
    assert secure_broker.dynsec_file is not None
    secure_broker.stop()  # offline: the plugin reads its file only at start
    done = run_cli("import-devices", str(passwd), "--dynsec-file", str(secure_broker.dynsec_file))
    secure_broker.start()
    assert done.returncode == 0, done.stderr
    assert "imported 1 devices" in done.stdout, done.stdout
    left_out = [line.split()[2].rstrip(":") for line in done.stdout.splitlines()[1:]]
    assert left_out == ["dev-1", "bridge-front", "dev-8"], done.stdout

    secure_broker.users["dev-7"] = "old-pw-7"
    dev7, dev1 = Device(secure_broker, "dev-7"), Device(secure_broker, "dev-1")
    try:
        await until(lambda: dev7.connack is not None and dev1.connack is not None)
        assert dev7.connack is not None and not dev7.connack.is_failure
        assert dev1.connack is not None and not dev1.connack.is_failure  # unchanged: pw-1
        dev7.client.subscribe([("devices/dev-7/commands/+", 1), ("devices/+/telemetry", 1)])
        own = dev7.publish("devices/dev-7/telemetry", b'{"t": 1}')
        other = dev7.publish("devices/dev-1/telemetry", b'{"t": 1}')
        await until(lambda: len(dev7.suback) == 2 and len(dev7.pubacks) == 2)
        assert [rc.is_failure for rc in dev7.suback] == [False, True]
        assert not dev7.pubacks[own].is_failure and dev7.pubacks[other].is_failure
    finally:
        dev7.close()
        dev1.close()
