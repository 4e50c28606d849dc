"""Receiving PUBLISH packets without a network: our codec against paho's receive path.

    python -m bench.mqtt_decode [--messages 100000]

The same bytes (QoS 1 MQTT 5 publishes of a ~90-byte reading; a second run with a
Subscription Identifier on each, as the front receives them) go through
``ingest.mqtt_packets.Decoder.feed`` in 64 KiB reads, and through paho-mqtt's own
``loop_read`` (which builds an ``MQTTMessage`` and a ``Properties`` object per message) on a
socket stand-in that returns the same bytes, so neither side pays for system calls.
Reports microseconds per message; indicative, on a shared machine.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ingest.mqtt_packets import Decoder, varint

PAYLOAD = b'{"ts": "2026-11-30T12:00:00.123Z", "metrics": {"temperature": 21.5, "humidity": 40.25}}'
READ = 65536


def packets(n: int, sid: int) -> bytes:
    out = []
    for i in range(n):
        topic = f"devices/dev-{i % 1000}/telemetry".encode()
        pid = (i % 65535 + 1).to_bytes(2, "big")
        props = b"\x02\x0b" + varint(sid) if sid else b"\x00"  # Subscription Identifier
        body = len(topic).to_bytes(2, "big") + topic + pid + props + PAYLOAD
        out.append(b"\x32" + varint(len(body)) + body)  # PUBLISH, QoS 1
    return b"".join(out)


def ours(data: bytes) -> tuple[float, int]:
    decoder = Decoder(v5=True)
    seen = 0
    t0 = time.perf_counter()
    for i in range(0, len(data), READ):
        for message in decoder.feed(data[i : i + READ]):
            seen += len(message.payload) > 0  # what a handler reads: topic, payload, mid
            _ = message.topic, message.mid, message.subscription_ids
    return time.perf_counter() - t0, seen


class _FakeSocket:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def recv(self, size: int) -> bytes:
        if self.pos >= len(self.data):
            raise BlockingIOError
        chunk = bytes(self.data[self.pos : self.pos + size])
        self.pos += len(chunk)
        return chunk

    def close(self) -> None:
        pass


def paho_path(data: bytes) -> tuple[float, int]:
    seen = 0

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        nonlocal seen
        seen += len(msg.payload) > 0
        _ = msg.topic, msg.mid, msg.properties

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)
    client.on_message = on_message
    client._sock = _FakeSocket(data)  # type: ignore[assignment]
    client._state = paho._ConnectionState.MQTT_CS_CONNECTED
    expected = data.count(b"/telemetry")
    t0 = time.perf_counter()
    while seen < expected and client.loop_read() == paho.MQTT_ERR_SUCCESS:
        pass
    return time.perf_counter() - t0, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    n = args.messages
    for label, sid in (("no properties (the ingest)", 0), ("subscription id (the front)", 7)):
        data = packets(n, sid)
        t_ours, seen_ours = ours(data)
        t_paho, seen_paho = paho_path(data)
        assert seen_ours == n, seen_ours
        print(
            f"{label}: {n} messages, ingest.mqtt_packets {t_ours / n * 1e6:.2f} us/msg "
            f"({n / t_ours:,.0f}/s), paho loop_read {t_paho / n * 1e6:.2f} us/msg "
            f"({n / t_paho:,.0f}/s; saw {seen_paho}), ratio {t_paho / t_ours:.1f}x"
        )


if __name__ == "__main__":
    main()
