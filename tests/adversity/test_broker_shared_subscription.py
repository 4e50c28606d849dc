"""Hostile device credentials against the production broker configuration (deploy/mosquitto/):
joining the ingest's shared subscription takes no reading away from it.

The ingests share `$share/ingest/devices/+/telemetry`: mosquitto hands each message to one
member of the group. A device that subscribes to the same filter becomes a member too. With
mosquitto 2.0's acl_file that SUBSCRIBE is granted (the file is consulted only when a message
is delivered): the broker then gives the device its turn of every device's readings, refuses
them at delivery and drops them, so the ingest never sees them (measured on mosquitto 2.0.11:
the ingest stored 3 of 6). The shipped device listener checks subscriptions with the
dynamic-security plugin: every subscription outside a device's own commands and errors is
refused in the SUBACK, and every reading reaches the ingest, also while the ingest is away
with its persistent session.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ingest.topics import Topics
from tests.adversity.test_broker_clientid import INGEST_ID, readings, until, wait_stored
from tests.helpers import MqttPeer, running_ingest
from tests.integration.secure_broker import SecureBroker, secure_broker

pytestmark = pytest.mark.integration

DEVICES = {"dev-1": "pw-1", "dev-2": "pw-2", "dev-3": "pw-3"}
N = 30  # readings per phase
# What the attackers ask for: the ingest's group (with its exact filter, and wider), a group
# of their own on every device's readings, plain subscriptions to other devices' topics.
STEAL = [
    "$share/ingest/devices/+/telemetry",
    "$share/ingest/#",
    "$share/mine/devices/+/telemetry",
    "devices/+/telemetry",
    "devices/dev-1/commands/+",
    "#",
]


class Attacker:
    """A device connection (MQTT v5 or 3.1.1) that subscribes to ``STEAL`` at QoS 1 and
    records the SUBACK codes and anything delivered to it."""

    def __init__(self, broker: SecureBroker, user: str, protocol: paho.MQTTProtocolVersion):
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"a-{uuid.uuid4().hex[:8]}",
            protocol=protocol, reconnect_on_failure=False,
        )  # fmt: skip
        self.client.username_pw_set(user, broker.users[user])
        self.connack: ReasonCode | None = None
        self.suback: list[ReasonCode] = []
        self.received: list[str] = []
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.suback.extend(codes)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port_for(user))
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.connack = rc
        if not rc.is_failure:
            client.subscribe([(topic, 1) for topic in STEAL])

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append(msg.topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(broker: SecureBroker, first: int, last: int) -> None:
    device = MqttPeer(broker.url("dev-1"))
    try:
        assert device.publish_many(readings(first, last)) == last - first
    finally:
        device.close()


async def test_a_device_cannot_take_a_share_of_the_ingest_readings(
    tmp_path: Path, database_url: str
) -> None:
    topics = Topics("")  # deploy/mosquitto/acl-ingest has no topic prefix
    ingest = {"client_id": INGEST_ID, "shared_subscription": True}  # as the units run it
    with secure_broker(tmp_path, DEVICES) as broker:
        ingest_url = broker.url("bridge-ingest")
        attackers: list[Attacker] = []
        try:
            async with running_ingest(ingest_url, database_url, topics, **ingest):
                # The ingest is a member of its group; two devices try to join it.
                attackers = [
                    Attacker(broker, "dev-2", paho.MQTTv5),
                    Attacker(broker, "dev-3", paho.MQTTv311),
                ]
                await until(
                    lambda: all(len(a.suback) == len(STEAL) for a in attackers),
                    what="no SUBACK for the attackers' subscriptions",
                )
                publish(broker, 0, N)
                await wait_stored(database_url, N, acknowledged=N)

            # The ingest is away (a restart, a deploy): its persistent session keeps its
            # place in the group and queues what devices send meanwhile.
            publish(broker, N, 2 * N)
            async with running_ingest(ingest_url, database_url, topics, **ingest):
                await wait_stored(database_url, 2 * N, acknowledged=2 * N)

            for a in attackers:
                codes = dict(zip(STEAL, a.suback, strict=True))
                granted = [topic for topic, rc in codes.items() if not rc.is_failure]
                assert granted == [], f"subscriptions granted to a device: {granted}"
                assert a.received == [], f"a device received {len(a.received)} messages"
        finally:
            for a in attackers:
                a.close()
