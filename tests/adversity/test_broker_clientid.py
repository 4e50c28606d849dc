"""Hostile credentials against the production broker configuration (deploy/mosquitto/):
asking for someone else's MQTT client id takes over nothing.

MQTT lets a new connection with an existing client id disconnect the old one and, with a
clean start, delete its session. If any credential could pick any id, a device (or a front's
credential) could kick the ingest and wipe its persistent session together with every
reading the broker had already acknowledged to devices and queued for it. The shipped
configuration ties every client's id to its username, devices and the bridge's own
connections alike, and accepts credentials only on their own listener; the bridge's own
processes, several ingests with their persistent sessions, several fronts and the
scheduler, still connect under it, each connection as its own user.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from websockets.asyncio.client import connect

from bridge.auth import mint
from bridge.embedded import free_port
from bridge.identities import broker_users
from ingest.topics import Topics
from tests.helpers import MqttPeer, running_ingest, wait_until
from tests.integration.frontkit import recv_type
from tests.integration.secure_broker import DYNSEC_ADMIN, INGEST_ID, SecureBroker, secure_broker

pytestmark = pytest.mark.integration

DEVICES = {"dev-1": "pw-1", "dev-2": "pw-2"}
FRONT_ID = "telemetry-bridge-front-1"  # what telemetry-bridge-front@1.service uses
SECRET = "clientid-secret-" + "c" * 40
CONNECTED = re.compile(r"New client connected from \S+ as (\S+) \(p\d, c\d, k\d+, u'([^']*)'\)")


class Conn:
    """One MQTT v5 connection with the client id, clean start and session expiry asked for;
    records CONNACKs, disconnections and messages. It never reconnects by itself, so a
    connection the broker closed stays closed."""

    def __init__(
        self,
        broker: SecureBroker,
        user: str,
        client_id: str,
        *,
        port: int | None = None,
        clean_start: bool = True,
        session_expiry: int = 0,
    ) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )  # fmt: skip
        self.client.username_pw_set(user, broker.users[user])
        self.connacks: list[ReasonCode] = []
        self.disconnects: list[ReasonCode] = []
        self.received: list[tuple[str, bytes]] = []
        self.subacks = 0
        self.pubacks = 0
        self._lock = threading.Lock()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connacks.append(rc)
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.append(rc)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
        self.client.connect(
            "127.0.0.1",
            port if port is not None else broker.port_for(user),
            clean_start=clean_start,
            properties=props,
        )
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload)))

    def _on_subscribe(self, *_a: Any) -> None:
        self.subacks += 1

    def _on_publish(self, *_a: Any) -> None:
        self.pubacks += 1

    @property
    def up(self) -> bool:
        return bool(self.connacks) and not self.connacks[-1].is_failure and not self.disconnects

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(check: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    async def ok() -> bool:
        return bool(check())

    try:
        await wait_until(ok, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}" if what else str(exc)) from None


def readings(first: int, last: int) -> list[tuple[str, bytes]]:
    base = datetime.now(UTC) - timedelta(minutes=5)
    topic = Topics("").device_telemetry("dev-1")
    return [
        (topic, orjson.dumps({"ts": (base + timedelta(seconds=i)).isoformat(), "values": {"t": i}}))
        for i in range(first, last)
    ]


async def stored(database_url: str) -> int:
    db = await asyncpg.connect(database_url)
    try:
        return int(await db.fetchval("SELECT count(*) FROM readings WHERE device_id = 'dev-1'"))
    finally:
        await db.close()


async def wait_stored(database_url: str, expected: int, acknowledged: int) -> None:
    """Until ``expected`` readings of dev-1 are stored; a clear failure otherwise."""
    for _ in range(150):
        if await stored(database_url) >= expected:
            break
        await asyncio.sleep(0.1)
    count = await stored(database_url)
    assert count == expected, (
        f"of {acknowledged} readings the broker acknowledged, {count} were stored "
        f"(expected {expected})"
    )


def takeovers(broker: SecureBroker, client_id: str) -> list[str]:
    return [line for line in broker.log().splitlines()
            if f"Client {client_id} already connected, closing old connection" in line]  # fmt: skip


# Who asks for the ingest's client id: a device, a front's connection, and, on the ingests'
# own listener, the scheduler's and the command-line tool's users. Those two share the
# listener's password (the boundary is the role, deploy/README.md), so what they show is that
# whatever id a connection asks for, by mistake or not, it only ever gets its own.
ATTACKERS = ["dev-2", FRONT_ID, "telemetry-bridge-scheduler", "telemetry-bridge-tool"]


@pytest.mark.parametrize("attacker", ATTACKERS)
async def test_no_other_credential_can_take_over_the_ingest_session(
    attacker: str, tmp_path: Path, database_url: str
) -> None:
    topics = Topics("")  # deploy/mosquitto/acl-ingest has no topic prefix
    ingest = {"client_id": INGEST_ID, "shared_subscription": True}  # as the units run it
    with secure_broker(tmp_path, DEVICES) as broker:
        ingest_url = broker.url("bridge-ingest")
        # The ingest's persistent session exists at the broker; the ingest goes away
        # (a restart, a deploy, a database outage).
        async with running_ingest(ingest_url, database_url, topics, **ingest):
            pass
        device = MqttPeer(broker.url("dev-1"))
        try:
            assert device.publish_many(readings(0, 30)) == 30  # queued for the ingest
        finally:
            device.close()

        # The attacker's credential asks for the ingest's client id: resuming its session (to
        # read what is queued there) and with a clean start (to delete it), on its own
        # listener and on each of the others.
        own = broker.port_for(attacker)
        others = [
            p for p in (broker.ingest_port, broker.front_port, broker.device_port) if p != own
        ]
        attackers = [
            Conn(broker, attacker, INGEST_ID, clean_start=False, session_expiry=3600),
            Conn(broker, attacker, INGEST_ID, clean_start=True),
            *(Conn(broker, attacker, INGEST_ID, port=p, clean_start=True) for p in others),
        ]
        await until(lambda: all(a.connacks or a.disconnects for a in attackers))
        await asyncio.sleep(0.3)  # whatever the session held would arrive now
        for a in attackers:
            a.close()
        stolen = [m for a in attackers for m in a.received]

        # A broker restart in between: the session, the listener it belongs to and its queue
        # survive it. (Nothing is published between the restart and the ingest's return:
        # mosquitto 2.0.11 restores a shared subscription of an offline session without
        # delivering to it until the client subscribes again, whatever the configuration.)
        broker.stop()
        broker.start()
        async with running_ingest(ingest_url, database_url, topics, **ingest):
            await wait_stored(database_url, 30, acknowledged=30)

            # While the ingest is connected: the attacker with its client id does not
            # disconnect it, and what devices send keeps being stored.
            again = Conn(broker, attacker, INGEST_ID, clean_start=True)
            await until(lambda: again.connacks or again.disconnects)
            device = MqttPeer(broker.url("dev-1"))
            try:
                assert device.publish_many(readings(30, 60)) == 30
                await wait_stored(database_url, 60, acknowledged=60)
            finally:
                device.close()
                again.close()
        assert stolen == [], f"{attacker} read messages queued for the ingest"
        assert takeovers(broker, INGEST_ID) == [], f"{attacker} disconnected the ingest"
        for a in attackers[2:]:
            assert a.connacks and a.connacks[0].is_failure, (
                f"{attacker}'s credential was accepted on another listener"
            )


async def test_a_device_cannot_take_over_another_device_or_the_front(tmp_path: Path) -> None:
    with secure_broker(tmp_path, DEVICES) as broker:
        # dev-1 has a persistent session for its commands and is offline for now.
        dev1 = Conn(broker, "dev-1", "dev-1", clean_start=False, session_expiry=3600)
        await until(lambda: dev1.up)
        dev1.client.subscribe("devices/dev-1/commands/+", 1)
        await until(lambda: dev1.subacks == 1)
        dev1.close()
        front = Conn(broker, FRONT_ID, FRONT_ID)  # a front's connection, as its own user
        await until(lambda: front.up)
        front.client.publish("devices/dev-1/commands/c1", b'{"command": "reboot"}', qos=1)
        await until(lambda: front.pubacks == 1)

        # dev-2 asks for dev-1's client id, then for the front's, each with a clean start.
        # Both connections get dev-2's own id: the second takes the first one over.
        first = Conn(broker, "dev-2", "dev-1", clean_start=True)
        await until(lambda: first.up)
        second = Conn(broker, "dev-2", FRONT_ID, clean_start=True)
        await until(lambda: second.up)
        await until(
            lambda: first.disconnects,
            timeout=3,
            what="dev-2 connected under the client ids it asked for, not under its own",
        )
        assert front.up, "a device disconnected the front"

        # dev-1 comes back and finds the command queued for it while it was away.
        dev1 = Conn(broker, "dev-1", "dev-1", clean_start=False, session_expiry=3600)
        await until(lambda: dev1.received, timeout=5)
        assert [t for t, _ in dev1.received] == ["devices/dev-1/commands/c1"]
        # Online, it is not disconnected by a device asking for its id either.
        third = Conn(broker, "dev-2", "dev-1", clean_start=True)
        await until(lambda: third.up)
        front.client.publish("devices/dev-1/commands/c2", b'{"command": "reboot"}', qos=1)
        await until(lambda: len(dev1.received) == 2)
        assert dev1.up and front.up
        assert takeovers(broker, "dev-1") == [] and takeovers(broker, FRONT_ID) == []

        # Credentials are valid on their own listener only.
        device_on_bridge = Conn(broker, "dev-2", "dev-2", port=broker.bridge_port)
        front_on_devices = Conn(broker, FRONT_ID, FRONT_ID, port=broker.device_port)
        await until(lambda: device_on_bridge.connacks and front_on_devices.connacks)
        assert device_on_bridge.connacks[0].is_failure
        assert front_on_devices.connacks[0].is_failure
        for c in (dev1, front, second, third, device_on_bridge, front_on_devices):
            c.close()
        first.client.loop_stop()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_the_bridge_processes_connect_under_the_shipped_config(
    tmp_path: Path, database_url: str, processes: dict[str, subprocess.Popen[bytes]]
) -> None:
    """Two ingests on the shared subscription, `serve --processes 2` and the scheduler, as
    deploy/systemd runs them: each connects, nobody takes anybody's id over, and a reading
    goes device -> ingest -> PostgreSQL -> front -> WebSocket client."""
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    with secure_broker(broker_dir, DEVICES) as broker:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update(
            BRIDGE_DATABASE_URL=database_url,
            BRIDGE_JWT_SECRET=SECRET,
            BRIDGE_WS_PORT=str(port),
            BRIDGE_INGEST_SCHEDULER="false",  # deploy/env.example: the scheduler runs the jobs
            BRIDGE_STATE_DIR=str(tmp_path / "state"),
        )
        ingest_env = {**env, "BRIDGE_MQTT_URL": broker.url("bridge-ingest")}
        front_env = {**env, "BRIDGE_MQTT_URL": broker.url("bridge-front")}
        ingest_ids = {"ingest-1": INGEST_ID, "ingest-2": "telemetry-bridge-ingest-2"}
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            name: (["ingest", "--shared"], {**ingest_env, "BRIDGE_INGEST_CLIENT_ID": cid})
            for name, cid in ingest_ids.items()
        }
        commands["scheduler"] = (["scheduler"], ingest_env)
        commands["front"] = (["serve", "--processes", "2"], front_env)
        for name, (args, proc_env) in commands.items():
            with open(tmp_path / f"{name}.log", "wb") as log:
                processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "bridge", *args],
                    env=proc_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

        def connected() -> dict[str, str]:
            return {cid: user for cid, user in CONNECTED.findall(broker.log())}

        # Each connection as deploy/systemd runs them, as its own user (`broker-users`); the
        # start-up checks (bridge/preflight.py) log in as the connections without a session.
        expected = {
            *broker_users("ingest", 2),
            *broker_users("scheduler"),
            *(f"telemetry-bridge-front-{i}{s}" for i in (1, 2) for s in ("", "-pub")),
        }

        try:
            await until(lambda: expected <= connected().keys(), timeout=60)
        except AssertionError:
            logs = {n: (tmp_path / f"{n}.log").read_text()[-2000:] for n in commands}
            raise AssertionError(f"not every process connected: {connected()}\n{logs}") from None

        token = mint(key=SECRET, algorithm="HS256", sub="ops", scopes="telemetry:read", ttl_s=600)
        async with connect(
            f"ws://127.0.0.1:{port}/ws", additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            await recv_type(ws, "connected")
            await ws.send(orjson.dumps({"type": "subscribe", "channel": "telemetry",
                                        "device_id": "dev-1"}))  # fmt: skip
            await recv_type(ws, "subscribed")
            device = MqttPeer(broker.url("dev-1"))
            try:
                assert device.publish_many(readings(0, 5)) == 5
            finally:
                device.close()
            update = await recv_type(ws, "telemetry_update", timeout=15)
            assert update["telemetry"]["t"]["value"] in range(5)
        await wait_stored(database_url, 5, acknowledged=5)

        ids = connected()
        assert all(cid == user for cid, user in ids.items()), ids  # every id is its username
        assert set(ids) == expected | {"dev-1", DYNSEC_ADMIN[0]}, ids  # + the fixture's admin
        assert [line for line in broker.log().splitlines() if "already connected" in line] == []
        assert "not authorised" not in broker.log()
        assert all(p.poll() is None for p in processes.values()), "a bridge process exited"
