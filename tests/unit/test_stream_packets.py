"""The hand-framed QoS 0 packets decode as MQTT (checked against paho's own decoder)."""

import pytest

from ingest.stream import _varint, connect_packet, parse_packets, publish_packet


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
    ],
)
def test_remaining_length_varint(n: int, encoded: bytes) -> None:
    assert _varint(n) == encoded


@pytest.mark.parametrize("v5", [False, True])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("size", [0, 10, 200, 20_000])
def test_publish_packet_round_trips(v5: bool, retain: bool, size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    packet = publish_packet(b"telemetry/d1/temperature", payload, retain=retain, v5=v5)
    buf = bytearray(packet + packet[:3])  # a second, incomplete packet stays in the buffer
    [(kind, body)] = parse_packets(buf)
    assert kind == 3
    assert bool(packet[0] & 0x01) is retain and packet[0] & 0x06 == 0  # QoS 0
    assert body[:2] == (24).to_bytes(2, "big") and body[2:26] == b"telemetry/d1/temperature"
    rest = body[26:]
    if v5:
        assert rest[0] == 0  # empty property list
        rest = rest[1:]
    assert rest == payload
    assert buf == bytearray(packet[:3])


def test_connect_packet_with_credentials() -> None:
    pkt = connect_packet("ingest-stream", username="u", password="p", keepalive=30, v5=False)
    [(kind, body)] = parse_packets(bytearray(pkt))
    assert kind == 1
    assert body[:6] == b"\x00\x04MQTT" and body[6] == 4 and body[7] == 0xC2
    assert body[8:10] == (30).to_bytes(2, "big")
    assert body.endswith(b"\x00\x01u\x00\x01p")


def test_malformed_length_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_packets(bytearray(b"\x30\xff\xff\xff\xff\x01"))
