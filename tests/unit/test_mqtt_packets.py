"""The MQTT codec against packets written out by hand from the MQTT 5.0 standard (section 3.x
for each packet type; 3.1.1 where it differs), and round trips for what it builds itself."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.mqtt_packets import (
    ConnAck,
    Decoder,
    Disconnect,
    Message,
    Packet,
    PingResp,
    ProtocolError,
    PubAck,
    SubAck,
    UnsubAck,
    connack_reason,
    connect,
    puback,
    publish,
    publish_many,
    read_varint,
    split_packets,
    subscribe,
    unsubscribe,
    varint,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# -- encoders ---------------------------------------------------------------------------------
ENCODED = [
    (
        "CONNECT v5: clean start, user and password, session expiry 3600, receive maximum 100",
        connect(
            "c",
            v5=True,
            clean_start=True,
            keepalive=30,
            username="u",
            password="p",
            session_expiry_s=3600,
            receive_maximum=100,
        ),
        "10 1c 0004 4d515454 05 c2 001e 08 11 00000e10 21 0064 0001 63 0001 75 0001 70",
    ),
    (
        "CONNECT v5: persistent session, no properties but the length",
        connect("ab", v5=True, clean_start=False, keepalive=60),
        "10 0f 0004 4d515454 05 00 003c 00 0002 6162",
    ),
    (
        "CONNECT 3.1.1: clean session off, no credentials",
        connect("ab", v5=False, clean_start=False, keepalive=60),
        "10 0e 0004 4d515454 04 00 003c 0002 6162",
    ),
    (
        "CONNECT 3.1.1: user without password",
        connect("a", v5=False, username="u"),
        "10 10 0004 4d515454 04 82 001e 0001 61 0001 75",
    ),
    (
        "SUBSCRIBE v5: QoS 1, retain as published, retain handling 1, subscription id 5",
        subscribe(
            1,
            ["a/+"],
            v5=True,
            qos=1,
            retain_as_published=True,
            retain_handling=1,
            subscription_id=5,
        ),
        "82 0b 0001 02 0b05 0003 612f2b 19",
    ),
    (
        "SUBSCRIBE v5: no local, retain handling 2 (do not send), subscription id 300",
        subscribe(2, ["t"], v5=True, no_local=True, retain_handling=2, subscription_id=300),
        "82 0a 0002 03 0bac02 0001 74 24",
    ),
    (
        "SUBSCRIBE v5: two filters, no identifier",
        subscribe(3, ["a", "b"], v5=True, qos=1),
        "82 0b 0003 00 0001 61 01 0001 62 01",
    ),
    (
        "SUBSCRIBE 3.1.1: only the QoS in the options byte",
        subscribe(10, ["t"], v5=False, qos=1, retain_as_published=True, retain_handling=2),
        "82 06 000a 0001 74 01",
    ),
    ("UNSUBSCRIBE v5", unsubscribe(2, ["a", "b"], v5=True), "a2 09 0002 00 0001 61 0001 62"),
    ("UNSUBSCRIBE 3.1.1", unsubscribe(2, ["a"], v5=False), "a2 05 0002 0001 61"),
    (
        "PUBLISH v5: QoS 1, retain, packet id 7",
        publish("t", b"hi", v5=True, qos=1, retain=True, packet_id=7),
        "33 08 0001 74 0007 00 6869",
    ),
    ("PUBLISH 3.1.1: QoS 0", publish("t", b"x", v5=False), "30 04 0001 74 78"),
    (
        "PUBLISH v5: QoS 0, 200-byte payload needs a two-byte remaining length",
        publish(b"t", b"z" * 200, v5=True),
        "30 cc01 0001 74 00" + "7a" * 200,
    ),
    ("PUBACK", puback(7), "40 02 0007"),
    ("PUBACK, the highest packet id", puback(65535), "40 02 ffff"),
]


@pytest.mark.parametrize(("what", "built", "expected"), ENCODED, ids=[e[0] for e in ENCODED])
def test_encoders_write_the_bytes_of_the_standard(what: str, built: bytes, expected: str) -> None:
    assert built == h(expected), what


def test_publish_many_frames_each_publish_as_publish_would() -> None:
    items = [("telemetry/d1/t", b"1"), ("telemetry/d2/t", b"x" * 300), ("s", b"")]
    for v5 in (False, True):
        framed, n = publish_many(items, v5=v5, retain=True)
        assert n == 3
        assert framed == b"".join(publish(t, p, v5=v5, retain=True) for t, p in items)
    assert publish_many([], v5=True) == (b"", 0)


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2_097_151, "ffff7f"),
        (2_097_152, "80808001"),
        (268_435_455, "ffffff7f"),
    ],
)
def test_variable_byte_integer_table(n: int, encoded: str) -> None:
    """Section 1.5.5's table of boundaries."""
    assert varint(n) == h(encoded)
    assert read_varint(h(encoded), 0, len(h(encoded))) == (n, len(h(encoded)))


@pytest.mark.parametrize("n", [-1, 268_435_456])
def test_variable_byte_integer_out_of_range(n: int) -> None:
    with pytest.raises(ValueError):
        varint(n)


@settings(max_examples=300)
@given(st.integers(0, 268_435_455), st.binary(max_size=3))
def test_variable_byte_integer_round_trip(n: int, after: bytes) -> None:
    data = b"\x00" + varint(n) + after
    value, pos = read_varint(data, 1, len(data))
    assert value == n and data[pos:] == after


# -- decoder ----------------------------------------------------------------------------------
DECODED: list[tuple[str, bool, str, list[Packet]]] = [
    (
        "CONNACK v5: session present; no subscription identifiers; server keepalive 20",
        True,
        "20 08 01 00 05 2900 130014",
        [ConnAck(True, 0, subscription_ids_available=False, server_keepalive=20)],
    ),
    (
        "CONNACK v5: bad user name or password",
        True,
        "20 03 00 86 00",
        [ConnAck(False, 0x86)],
    ),
    (
        "CONNACK v5: properties skipped (assigned client id, reason string, user property)",
        True,
        "20 13 00 00 10 120002 6964 1f0001 78 26 0001 6b 0001 76",
        [ConnAck(False, 0)],
    ),
    ("CONNACK 3.1.1: not authorized", False, "20 02 00 05", [ConnAck(False, 5)]),
    ("SUBACK v5: granted QoS 1, then refused", True, "90 05 0001 00 01 80", [SubAck(1, (1, 0x80))]),
    ("SUBACK 3.1.1", False, "90 03 000a 01", [SubAck(10, (1,))]),
    ("UNSUBACK v5", True, "b0 04 0002 00 00", [UnsubAck(2, (0,))]),
    ("UNSUBACK 3.1.1: no reason codes", False, "b0 02 0002", [UnsubAck(2, ())]),
    ("PUBACK: success left out", True, "40 02 0005", [PubAck(5, 0)]),
    ("PUBACK v5: no matching subscribers", True, "40 03 0005 10", [PubAck(5, 0x10)]),
    ("PINGRESP", True, "d0 00", [PingResp()]),
    ("DISCONNECT v5: session taken over", True, "e0 01 8e", [Disconnect(0x8E)]),
    ("DISCONNECT v5: normal, reason left out", True, "e0 00", [Disconnect(0)]),
    (
        "PUBLISH 3.1.1: QoS 0",
        False,
        "30 04 0001 74 78",
        [Message("t", b"x", 0, False, 0)],
    ),
    (
        "PUBLISH v5: QoS 1, retain, dup, no properties",
        True,
        "3b 08 0001 74 0007 00 6869",
        [Message("t", b"hi", 1, True, 7, (), True)],
    ),
    (
        "PUBLISH v5: two subscription identifiers; a user property and content type skipped",
        True,
        "32 1d 0003 612f62 0009 13 0b01 0bac02 26 0001 6b 0001 76 03 0004 6a736f6e 7b7d",
        [Message("a/b", b"{}", 1, False, 9, (1, 300))],
    ),
    (
        "PUBLISH v5: empty payload, then a PINGRESP in the same read",
        True,
        "30 04 0001 74 00 d0 00",
        [Message("t", b""), PingResp()],
    ),
    (
        "PUBLISH v5: UTF-8 topic",
        True,
        "30 07 0004 c3a9 2f 61 00",
        [Message("é/a", b"")],
    ),
]


@pytest.mark.parametrize(("what", "v5", "data", "packets"), DECODED, ids=[d[0] for d in DECODED])
def test_decoder_reads_the_packets_of_the_standard(
    what: str, v5: bool, data: str, packets: list[Packet]
) -> None:
    assert Decoder(v5=v5).feed(h(data)) == packets, what


@pytest.mark.parametrize(("what", "v5", "data", "packets"), DECODED, ids=[d[0] for d in DECODED])
def test_decoder_waits_for_the_rest_of_a_split_packet(
    what: str, v5: bool, data: str, packets: list[Packet]
) -> None:
    raw = h(data)
    for cut in range(len(raw) + 1):
        decoder = Decoder(v5=v5)
        got = decoder.feed(raw[:cut])
        got += decoder.feed(raw[cut:])
        assert got == packets, (what, cut)
        assert decoder.buffered == 0


MALFORMED = [
    ("remaining length of five bytes", True, "30 ffffffff01"),
    ("PUBLISH with QoS 3", True, "36 05 0001 74 0001"),
    ("topic longer than the packet", False, "30 03 0005 74 3004000174 78"),
    ("topic not UTF-8", False, "30 04 0001 ff 78"),
    ("unknown property", True, "30 06 0001 74 02 7f00"),
    ("property list longer than the packet", True, "30 04 0001 74 09"),
    ("subscription identifier 0", True, "30 06 0001 74 02 0b00"),
    ("a CONNECT is not sent to clients", True, "10 00"),
    ("SUBACK without reason codes", False, "90 02 0001"),
    ("PINGRESP with a body", True, "d0 01 00"),
    ("CONNACK too short", True, "20 01 00"),
    ("DISCONNECT does not exist in 3.1.1", False, "e0 00"),
]


@pytest.mark.parametrize(("what", "v5", "data"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_is_one_error(what: str, v5: bool, data: str) -> None:
    with pytest.raises(ProtocolError):
        Decoder(v5=v5).feed(h(data))


TOPICS = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(
    v5=st.booleans(),
    publishes=st.lists(
        st.tuples(
            TOPICS,
            st.binary(max_size=400),
            st.integers(0, 1),
            st.booleans(),
            st.integers(1, 65535),
        ),
        min_size=1,
        max_size=8,
    ),
    cuts=st.lists(st.integers(0, 4000), max_size=5),
)
def test_publish_round_trip_in_any_chunks(
    v5: bool, publishes: list[tuple[str, bytes, int, bool, int]], cuts: list[int]
) -> None:
    raw = b"".join(
        publish(t, p, v5=v5, qos=q, retain=r, packet_id=pid if q else 0)
        for t, p, q, r, pid in publishes
    )
    decoder = Decoder(v5=v5)
    got: list[Packet] = []
    last = 0
    for cut in sorted(c for c in cuts if c <= len(raw)):
        got += decoder.feed(raw[last:cut])
        last = cut
    got += decoder.feed(raw[last:])
    assert got == [Message(t, p, q, r, pid if q else 0) for t, p, q, r, pid in publishes]
    assert decoder.buffered == 0


def test_connack_reasons_are_named() -> None:
    assert connack_reason(0x86, v5=True) == "bad user name or password (0x86)"
    assert connack_reason(4, v5=False) == "bad user name or password (0x04)"
    assert connack_reason(0xF0, v5=True) == "refused (0xf0)"


def test_split_packets_leaves_an_incomplete_tail() -> None:
    raw = publish("t", b"x" * 300, v5=False) + puback(1)
    buffer = bytearray(raw + raw[:4])  # a third packet, its remaining length not complete
    assert split_packets(buffer) == [(3, raw[3:-4]), (4, b"\x00\x01")]
    assert buffer == bytearray(raw[:4])
    with pytest.raises(ProtocolError):
        split_packets(bytearray(h("30 ffffffff01")))
